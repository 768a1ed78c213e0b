//! UTC timestamps for result folders and files, without a date-time dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_timestamp(at: SystemTime) -> String {
    let (date, (hour, minute, second)) = split(at);
    format!("{}T{hour:02}:{minute:02}:{second:02}Z", date_text(date))
}

/// `YYYYMMDD-HHMMSS`: sorts by time and is safe in a path.
pub fn folder_timestamp(at: SystemTime) -> String {
    let ((year, month, day), (hour, minute, second)) = split(at);
    format!("{year:04}{month:02}{day:02}-{hour:02}{minute:02}{second:02}")
}

fn date_text((year, month, day): (i64, u32, u32)) -> String {
    format!("{year:04}-{month:02}-{day:02}")
}

fn split(at: SystemTime) -> ((i64, u32, u32), (u64, u64, u64)) {
    // Before 1970 only with a broken clock; the epoch is as good an answer as any.
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    (civil_date(days), (rest / 3600, rest % 3600 / 60, rest % 60))
}

/// The proleptic Gregorian date `days` after 1970-01-01. Counts in 400-year eras
/// (146,097 days each) of years that start on March 1, so the leap day ends a year.
fn civil_date(days: i64) -> (i64, u32, u32) {
    const DAYS_PER_ERA: i64 = 146_097;
    // 1970-01-01 is day 719,468 counted from 0000-03-01.
    let from_march_0000 = days + 719_468;
    let era = from_march_0000.div_euclid(DAYS_PER_ERA);
    let day_of_era = from_march_0000.rem_euclid(DAYS_PER_ERA);
    // Years of the era: 365 days each, plus a leap day every 4 years, except every
    // 100 (days 36,524 and 146,096 are the corrections).
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 153 days per 5 months (31,30,31,30,31).
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    // Both are in range by construction (1–31, 1–12).
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn known_instants_render_as_utc() {
        assert_eq!(utc_timestamp(at(0)), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century divisible by 400) 12:34:56.
        assert_eq!(utc_timestamp(at(951_827_696)), "2000-02-29T12:34:56Z");
        assert_eq!(utc_timestamp(at(1_709_164_800)), "2024-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(at(1_735_689_599)), "2024-12-31T23:59:59Z");
        assert_eq!(folder_timestamp(at(1_735_689_600)), "20250101-000000");
    }

    fn days_in_month(year: i64, month: u32) -> u32 {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn every_day_follows_the_one_before() {
        let mut previous = civil_date(0);
        for days in 1..(400 * 366) {
            let (year, month, day) = civil_date(days);
            let (p_year, p_month, p_day) = previous;
            let next_day = (year, month, day) == (p_year, p_month, p_day + 1);
            let month_ended = p_day == days_in_month(p_year, p_month);
            let next_month = day == 1
                && month_ended
                && ((year, month) == (p_year, p_month + 1) || (year, month, p_month) == (p_year + 1, 1, 12));
            assert!(next_day || next_month, "{previous:?} then {:?}", (year, month, day));
            previous = (year, month, day);
        }
        assert_eq!(previous.0, 2370, "400 years of days from 1970");
    }
}

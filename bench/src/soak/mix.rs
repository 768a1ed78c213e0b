//! What each soak stream does: its kind, drawn by weight from `--mix`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The default `--mix`: mostly ordinary streams, every fault kind a few percent.
pub const DEFAULT_MIX: &str = "normal=70,backend-abort=5,backend-500=5,backend-stall=3,client-close=5,\
                               client-rst=4,client-stop-reading=3,bad-handoff=3,over-capacity=2";

/// One kind of soak stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A full stream read to its end.
    Normal,
    /// The backend ends the body after a few chunks without finishing (`abort:N`).
    BackendAbort,
    /// The backend answers HTTP 500 (`status:500`).
    #[serde(rename = "backend-500")]
    Backend500,
    /// The backend is silent before its head for longer than the daemon's first-byte
    /// timeout (`stall-head:MS`).
    BackendStall,
    /// The client closes (FIN) after the first event.
    ClientClose,
    /// The client resets (SO_LINGER 0) after the first event.
    ClientRst,
    /// The client takes the head, stops reading for a while with a small receive
    /// buffer under a long response, then reads the rest.
    ClientStopReading,
    /// The handoff data is truncated JSON: the daemon must answer 400.
    BadHandoff,
    /// Handed off while the daemon is at `--max-connections`: 503 expected (let in
    /// after all, the client leaves once the head arrives).
    OverCapacity,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Normal,
        Kind::BackendAbort,
        Kind::Backend500,
        Kind::BackendStall,
        Kind::ClientClose,
        Kind::ClientRst,
        Kind::ClientStopReading,
        Kind::BadHandoff,
        Kind::OverCapacity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::BackendAbort => "backend-abort",
            Kind::Backend500 => "backend-500",
            Kind::BackendStall => "backend-stall",
            Kind::ClientClose => "client-close",
            Kind::ClientRst => "client-rst",
            Kind::ClientStopReading => "client-stop-reading",
            Kind::BadHandoff => "bad-handoff",
            Kind::OverCapacity => "over-capacity",
        }
    }

    fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Weights of the kinds. Every kind but over-capacity is drawn per stream; the
/// over-capacity weight is its share of the concurrency (see [`Mix::over_capacity_slots`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; Kind::ALL.len()],
}

/// A `--mix` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixError(String);

impl fmt::Display for MixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--mix: {}", self.0)
    }
}

impl std::error::Error for MixError {}

impl FromStr for Mix {
    type Err = MixError;

    /// `kind=weight,…`; kinds left out weigh zero.
    fn from_str(text: &str) -> Result<Mix, MixError> {
        let mut weights = [0u32; Kind::ALL.len()];
        let mut seen = [false; Kind::ALL.len()];
        if text.trim().is_empty() {
            return Err(MixError("empty; give kind=weight pairs, e.g. normal=90,client-rst=10".to_owned()));
        }
        for item in text.split(',') {
            let item = item.trim();
            let Some((name, weight)) = item.split_once('=') else {
                return Err(MixError(format!("{item:?} is not kind=weight")));
            };
            let name = name.trim();
            let Some(kind) = Kind::ALL.iter().copied().find(|k| k.name() == name) else {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                return Err(MixError(format!("unknown kind {name:?} (known: {})", known.join(", "))));
            };
            let weight: u32 = weight.trim().parse().map_err(|e| {
                MixError(format!("{name}: weight {:?} is not a whole number: {e}", weight.trim()))
            })?;
            if std::mem::replace(&mut seen[kind.index()], true) {
                return Err(MixError(format!("{name} is given twice")));
            }
            weights[kind.index()] = weight;
        }
        let mix = Mix { weights };
        if mix.regular_total() == 0 {
            return Err(MixError(
                "no stream kind besides over-capacity has a weight (over-capacity needs others holding the daemon full)"
                    .to_owned(),
            ));
        }
        Ok(mix)
    }
}

impl Default for Mix {
    fn default() -> Mix {
        // The default text is a valid mix (a unit test says so); fall back to all-normal regardless.
        DEFAULT_MIX.parse().unwrap_or(Mix { weights: [1, 0, 0, 0, 0, 0, 0, 0, 0] })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = Kind::ALL
            .iter()
            .filter(|k| self.weight(**k) > 0)
            .map(|k| format!("{}={}", k.name(), self.weight(*k)))
            .collect();
        f.write_str(&items.join(","))
    }
}

impl Mix {
    pub fn weight(&self, kind: Kind) -> u32 {
        self.weights[kind.index()]
    }

    fn total(&self) -> u64 {
        self.weights.iter().map(|w| u64::from(*w)).sum()
    }

    fn regular_total(&self) -> u64 {
        self.total() - u64::from(self.weight(Kind::OverCapacity))
    }

    /// Of `concurrency` slots, how many keep handing off over capacity: the
    /// over-capacity share of the weights, at least one when it has a weight and
    /// always leaving one regular slot.
    pub fn over_capacity_slots(&self, concurrency: u64) -> u64 {
        let weight = u64::from(self.weight(Kind::OverCapacity));
        if weight == 0 || concurrency < 2 {
            return 0;
        }
        let share = (concurrency * weight + self.total() / 2) / self.total();
        share.clamp(1, concurrency - 1)
    }

    /// The regular kind for a random number `r`, by weight.
    pub fn pick_regular(&self, r: u64) -> Kind {
        let mut point = r % self.regular_total().max(1);
        for kind in Kind::ALL {
            if kind == Kind::OverCapacity {
                continue;
            }
            let weight = u64::from(self.weight(kind));
            if point < weight {
                return kind;
            }
            point -= weight;
        }
        Kind::Normal
    }
}

/// SplitMix64: a small seeded generator, so a run's sequence of kinds repeats.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mix_parses_and_prints_back() {
        let mix = Mix::default();
        assert_eq!(mix.to_string(), DEFAULT_MIX);
        assert_eq!(mix.weight(Kind::Normal), 70);
        assert_eq!(mix.weight(Kind::OverCapacity), 2);
    }

    #[test]
    fn bad_mixes_say_what_is_wrong() {
        let error = |text: &str| text.parse::<Mix>().expect_err(text).to_string();
        assert!(error("").contains("empty"));
        assert!(error("normal").contains("\"normal\" is not kind=weight"));
        assert!(error("normal=1,slow-loris=2")
            .contains("unknown kind \"slow-loris\" (known: normal, backend-abort"));
        assert!(error("normal=lots").contains("normal: weight \"lots\" is not a whole number"));
        assert!(error("normal=-1").contains("not a whole number"));
        assert!(error("normal=1,normal=2").contains("normal is given twice"));
        assert!(error("over-capacity=5").contains("no stream kind besides over-capacity"));
        assert!(error("normal=0").contains("no stream kind besides over-capacity"));
    }

    #[test]
    fn kinds_are_drawn_in_proportion_to_their_weights() {
        let mix: Mix = "normal=3,client-rst=1,over-capacity=4".parse().expect("valid");
        let picks: Vec<Kind> = (0..8).map(|r| mix.pick_regular(r)).collect();
        let rst = picks.iter().filter(|k| **k == Kind::ClientRst).count();
        assert_eq!((picks.len() - rst, rst), (6, 2), "{picks:?}");
        assert!(!picks.contains(&Kind::OverCapacity), "over-capacity has slots of its own");
    }

    #[test]
    fn over_capacity_slots_are_its_share_of_the_concurrency() {
        let mix = Mix::default();
        assert_eq!(mix.over_capacity_slots(5_000), 100);
        assert_eq!(mix.over_capacity_slots(1_000), 20);
        assert_eq!(mix.over_capacity_slots(10), 1, "at least one");
        assert_eq!(mix.over_capacity_slots(1), 0, "never the only slot");
        let heavy: Mix = "normal=1,over-capacity=99".parse().expect("valid");
        assert_eq!(heavy.over_capacity_slots(10), 9, "a regular slot is always left");
        let none: Mix = "normal=1".parse().expect("valid");
        assert_eq!(none.over_capacity_slots(5_000), 0);
    }

    #[test]
    fn the_generator_repeats_for_a_seed() {
        let a: Vec<u64> = (0..4).scan(SplitMix::new(7), |g, _| Some(g.next_u64())).collect();
        let b: Vec<u64> = (0..4).scan(SplitMix::new(7), |g, _| Some(g.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
    }
}

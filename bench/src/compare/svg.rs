//! A few SVG elements written as text: enough for the comparison's charts.

use std::fmt::Write as _;

/// Where a text's x coordinate sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn name(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// An SVG document being written.
pub struct Svg {
    out: String,
}

impl Svg {
    /// A `width` × `height` document on a white background.
    pub fn new(width: f64, height: f64) -> Svg {
        let mut out = String::with_capacity(16 * 1024);
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
        );
        let _ = writeln!(out, r#"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="white"/>"#);
        Svg { out }
    }

    pub fn rect(&mut self, x: f64, y: f64, width: f64, height: f64, fill: &str) {
        let _ = writeln!(
            self.out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}"/>"#,
            width.max(0.0),
            height.max(0.0)
        );
    }

    pub fn line(&mut self, from: (f64, f64), to: (f64, f64), stroke: &str, width: f64) {
        let _ = writeln!(
            self.out,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{stroke}" stroke-width="{width}"/>"#,
            from.0, from.1, to.0, to.1
        );
    }

    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: &str, width: f64) {
        let points: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            self.out,
            r#"<polyline points="{}" fill="none" stroke="{stroke}" stroke-width="{width}"/>"#,
            points.join(" ")
        );
    }

    pub fn circle(&mut self, center: (f64, f64), radius: f64, fill: &str) {
        let _ = writeln!(
            self.out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{radius}" fill="{fill}"/>"#,
            center.0, center.1
        );
    }

    pub fn text(&mut self, at: (f64, f64), text: &str, size: f64, anchor: Anchor) {
        self.text_styled(at, text, size, anchor, "#222");
    }

    pub fn text_styled(&mut self, at: (f64, f64), text: &str, size: f64, anchor: Anchor, fill: &str) {
        let _ = writeln!(
            self.out,
            r#"<text x="{:.1}" y="{:.1}" font-size="{size}" text-anchor="{}" fill="{fill}">{}</text>"#,
            at.0,
            at.1,
            anchor.name(),
            escape(text)
        );
    }

    pub fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

/// Text as SVG character data.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_the_document_closed() {
        let mut svg = Svg::new(100.0, 50.0);
        svg.text((1.0, 2.0), "p99 <1 ms & \"fast\"", 10.0, Anchor::Middle);
        let doc = svg.finish();
        assert!(doc.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"100\" height=\"50\""));
        assert!(doc.contains(">p99 &lt;1 ms &amp; &quot;fast&quot;</text>"), "{doc}");
        assert!(doc.contains("text-anchor=\"middle\""));
        assert!(doc.ends_with("</svg>\n"));
    }

    #[test]
    fn negative_sizes_are_drawn_as_nothing() {
        let mut svg = Svg::new(10.0, 10.0);
        svg.rect(0.0, 0.0, -5.0, 3.0, "red");
        assert!(svg.finish().contains(r#"width="0.0" height="3.0" fill="red""#));
    }
}

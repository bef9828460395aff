//! Small charts as inline SVG, rendered by the server (no script): stacked columns over time
//! and horizontal bars. Colours come from CSS classes (the Content-Security-Policy forbids
//! inline styles); every column and bar has a `<title>`, so hovering tells the numbers.

use maud::{html, Markup};

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 150.0;
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 16.0;
const TOP: f64 = 8.0;

/// A column as drawn: x, its rectangles `(class, y, height)`, its tooltip.
type Column<'a> = (f64, Vec<(&'a str, f64, f64)>, &'a str);

/// One column: its parts bottom-up (CSS class, value), and what hovering says.
pub struct Stack {
    /// `(class, value)`, drawn bottom-up.
    pub parts: Vec<(String, f64)>,
    /// The tooltip.
    pub title: String,
}

fn number(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A round ceiling for the y axis (1, 2, 5 × 10ⁿ).
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * magnitude)
}

/// Stacked columns over time in `slots` slots, the newest on the right (the slots on the left
/// stay empty until the history fills); `left` and `right` label the x axis ends.
pub fn columns(label: &str, stacks: &[Stack], slots: usize, left: &str, right: &str) -> Markup {
    let max = stacks
        .iter()
        .map(|s| s.parts.iter().map(|(_, v)| v.max(0.0)).sum::<f64>())
        .fold(0.0, f64::max);
    let top = nice_max(max);
    let plot_h = HEIGHT - BOTTOM - TOP;
    let plot_w = WIDTH - LEFT;
    let slots = slots.max(stacks.len()).max(1);
    let first = slots - stacks.len();
    let slot = plot_w / slots as f64;
    let bar = (slot * 0.8).max(1.0);
    let y = |v: f64| TOP + plot_h - v / top * plot_h;
    let drawn: Vec<Column<'_>> = stacks
        .iter()
        .enumerate()
        .map(|(i, stack)| {
            let x = LEFT + (first + i) as f64 * slot + (slot - bar) / 2.0;
            let mut base = 0.0;
            let mut rects = Vec::new();
            for (class, value) in &stack.parts {
                let v = value.max(0.0);
                if v > 0.0 {
                    rects.push((class.as_str(), y(base + v), v / top * plot_h));
                }
                base += v;
            }
            (x, rects, stack.title.as_str())
        })
        .collect();
    let f = |v: f64| format!("{v:.2}");
    html! {
        svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(label) {
            title { (label) }
            line.axis x1=(LEFT) y1=(TOP + plot_h) x2=(WIDTH) y2=(TOP + plot_h) {}
            line.axis x1=(LEFT) y1=(TOP) x2=(WIDTH) y2=(TOP) stroke-dasharray="2 3" {}
            text x=(LEFT - 4.0) y=(TOP + 4.0) text-anchor="end" { (number(top)) }
            text x=(LEFT - 4.0) y=(TOP + plot_h) text-anchor="end" { "0" }
            text x=(LEFT) y=(HEIGHT - 3.0) { (left) }
            text x=(WIDTH) y=(HEIGHT - 3.0) text-anchor="end" { (right) }
            @for (x, rects, title) in &drawn {
                g {
                    title { (title) }
                    // The whole slot is the hover target, even when the column is empty.
                    rect x=(f(*x)) y=(TOP) width=(f(bar)) height=(f(plot_h)) fill="transparent" {}
                    @for (class, y, h) in rects {
                        rect class=(class) x=(f(*x)) y=(f(*y)) width=(f(bar)) height=(f(*h)) {}
                    }
                }
            }
        }
    }
}

/// Horizontal bars: `(label, value, class)`, longest first as given.
pub fn bars(label: &str, rows: &[(String, f64, String)]) -> Markup {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
    let row_h = 22.0;
    let height = row_h * rows.len().max(1) as f64;
    let label_w = 130.0;
    let plot_w = WIDTH - label_w - 60.0;
    let width = |v: f64| {
        let w = v.max(0.0) / max * plot_w;
        if v > 0.0 {
            w.max(1.0)
        } else {
            0.0
        }
    };
    html! {
        svg.chart viewBox={ "0 0 " (WIDTH) " " (height) } role="img" aria-label=(label) {
            title { (label) }
            @for (i, (name, value, class)) in rows.iter().enumerate() {
                @let y = i as f64 * row_h;
                g {
                    title { (name) ": " (number(*value)) }
                    text x=(label_w - 6.0) y=(y + 15.0) text-anchor="end" { (name) }
                    rect class=(class) x=(label_w) y=(y + 4.0) width=(format!("{:.2}", width(*value)))
                        height=(row_h - 8.0) {}
                    text x=(format!("{:.2}", label_w + width(*value) + 6.0)) y=(y + 15.0) { (number(*value)) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_y_axis_ends_on_a_round_number_above_the_largest_value() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(10.0), 10.0);
        assert_eq!(nice_max(11.0), 20.0);
        assert_eq!(nice_max(450.0), 500.0);
    }

    #[test]
    fn a_chart_is_svg_without_inline_style() {
        let stacks = vec![Stack {
            parts: vec![("bar-ok".into(), 3.0), ("bar-failed".into(), 1.0)],
            title: "4 cycles".into(),
        }];
        let svg = columns("cycles", &stacks, 10, "-1m", "now").into_string();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("class=\"bar-ok\"") && svg.contains("class=\"bar-failed\""));
        assert!(!svg.contains("style"), "{svg}");
        let bars = bars("dropped", &[("debounce".into(), 2.0, "bar-dropped".into())]);
        assert!(!bars.into_string().contains("style"));
    }
}

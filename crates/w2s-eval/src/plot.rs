//! SVG plots in pure Rust (plotters' SVG backend, no system fonts: text is written as SVG
//! text elements and laid out with plotters' built-in size estimate).

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::summary::{MethodSummary, Summary};

/// File name and title of each plot.
pub const PLOTS: [(&str, &str); 2] = [
    ("gold_by_method.svg", "Gold reward per method"),
    (
        "gold_vs_tokens.svg",
        "Gold reward against strong-model tokens",
    ),
];

const SIZE: (u32, u32) = (820, 500);
const FONT: &str = "sans-serif";

fn y_range(methods: &[&MethodSummary]) -> std::ops::Range<f64> {
    let finite = |v: f64| v.is_finite().then_some(v);
    let lo = methods
        .iter()
        .filter_map(|m| finite(m.ci_low))
        .fold(f64::INFINITY, f64::min);
    let hi = methods
        .iter()
        .filter_map(|m| finite(m.ci_high))
        .fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.1).max(0.01);
    (lo - pad)..(hi + pad)
}

/// Mean gold reward per method with its 95% interval.
pub fn gold_by_method(s: &Summary) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let methods: Vec<&MethodSummary> = s.methods.iter().collect();
        let n = methods.len().max(1) as u32;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{} (mean {}, 95% bootstrap interval)", PLOTS[0].1, s.gold),
                (FONT, 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0u32..n).into_segmented(), y_range(&methods))
            .map_err(|e| e.to_string())?;
        let names: Vec<String> = methods.iter().map(|m| m.method.clone()).collect();
        let label = |v: &SegmentValue<u32>| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n as usize)
            .x_label_formatter(&label)
            .y_desc(format!("mean {}", s.gold))
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, m) in methods.iter().enumerate() {
            let x = SegmentValue::CenterOf(i as u32);
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x.clone(), m.ci_low), (x.clone(), m.ci_high)],
                    color.stroke_width(2),
                )))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Circle::new(
                    (x, m.mean_gold),
                    5,
                    color.filled(),
                )))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Which curve a method belongs to in the compute plot.
fn family(method: &str) -> &'static str {
    if method == "sample" || method.starts_with("bon:") {
        "Best-of-N (sample = N 1)"
    } else if method.starts_with("cbs:") {
        "CBS"
    } else if method == "guide" {
        "guide alone"
    } else {
        "EFT"
    }
}

/// Mean gold reward against strong-model tokens per prompt: Best-of-N and CBS curves
/// (CBS at W*K = N costs what BoN-N costs), EFT and the guide alone (no strong token) as
/// points.
pub fn gold_vs_tokens(s: &Summary) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let methods: Vec<&MethodSummary> = s.methods.iter().collect();
        let x_max = methods
            .iter()
            .map(|m| m.strong_tokens_per_prompt)
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(PLOTS[1].1, (FONT, 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max * 1.08, y_range(&methods))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("strong-model tokens sampled per prompt")
            .y_desc(format!("mean {}", s.gold))
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (fi, fam) in ["Best-of-N (sample = N 1)", "CBS", "EFT", "guide alone"]
            .iter()
            .enumerate()
        {
            let mut pts: Vec<&MethodSummary> = methods
                .iter()
                .copied()
                .filter(|m| family(&m.method) == *fam)
                .collect();
            if pts.is_empty() {
                continue;
            }
            pts.sort_by(|a, b| {
                a.strong_tokens_per_prompt
                    .total_cmp(&b.strong_tokens_per_prompt)
            });
            let color = Palette99::pick(fi).to_rgba();
            let xy: Vec<(f64, f64)> = pts
                .iter()
                .map(|m| (m.strong_tokens_per_prompt, m.mean_gold))
                .collect();
            let points_only = matches!(*fam, "EFT" | "guide alone");
            if !points_only {
                chart
                    .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(*fam)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            let series = chart
                .draw_series(xy.iter().map(|&p| Circle::new(p, 5, color.filled())))
                .map_err(|e| e.to_string())?;
            if points_only {
                series
                    .label(*fam)
                    .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
            }
            for m in &pts {
                let x = m.strong_tokens_per_prompt;
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, m.ci_low), (x, m.ci_high)],
                        color.stroke_width(1),
                    )))
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        m.method.clone(),
                        (x, m.mean_gold),
                        (FONT, 12).into_font(),
                    )))
                    .map_err(|e| e.to_string())?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::record;
    use crate::summary::summarize;

    #[test]
    fn plots_are_svg_with_method_names_and_no_font_files() {
        let mut recs = Vec::new();
        for (m, g) in [
            ("sample", 0.1),
            ("bon:16", 0.4),
            ("cbs:4x4x5", 0.6),
            ("eft:1", 0.2),
        ] {
            for id in ["a", "b", "c"] {
                let mut r = record(m, 1, id, g + id.len() as f64 * 0.01);
                r.strong_tokens = if m == "sample" || m == "eft:1" {
                    50
                } else {
                    800
                };
                recs.push(r);
            }
        }
        let s = summarize(&recs);
        for svg in [gold_by_method(&s).unwrap(), gold_vs_tokens(&s).unwrap()] {
            assert!(
                svg.starts_with("<svg") || svg.contains("<svg"),
                "{}",
                &svg[..100]
            );
            assert!(svg.trim_end().ends_with("</svg>"));
            assert!(svg.contains("<text"), "labels are text elements");
            assert!(!svg.contains("<image"), "no rasterised text");
        }
        let by_method = gold_by_method(&s).unwrap();
        for m in ["sample", "bon:16", "cbs:4x4x5", "eft:1"] {
            assert!(by_method.contains(m), "{m} missing");
        }
        let vs = gold_vs_tokens(&s).unwrap();
        assert!(vs.contains("CBS") && vs.contains("EFT") && vs.contains("Best-of-N"));
    }
}

//! The report's charts as SVG, drawn with `plotters` (SVG backend only: no bitmap backend and no system
//! fonts, so PNG is not written): training curves per cell, the bar chart of a table against the paper,
//! and the Fig. 4-style t-SNE grid. Each function returns the SVG text; the caller writes it atomically.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::epochs::EpochLine;
use super::features::Fig4;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Line colours, one per seed (matplotlib's tab10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// The paper's Fig. 4 colours: orange, blue, green.
const CLASS_COLORS: [RGBColor; 3] = [RGBColor(255, 127, 14), RGBColor(31, 119, 180), RGBColor(44, 160, 44)];
const OURS: RGBColor = RGBColor(31, 119, 180);
const PAPER: RGBColor = RGBColor(170, 170, 170);

fn plot_err<E: std::fmt::Display>(e: E) -> crate::Error {
    crate::Error::Invalid(format!("drawing the chart: {e}"))
}

/// `lo..hi` of the finite `values` with a 5 % margin; a usable range for constant or absent values.
fn padded_range(values: impl Iterator<Item = f64>, floor_zero: bool) -> std::ops::Range<f64> {
    let (mut lo, mut hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    if floor_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-12 {
        hi = lo + lo.abs().max(1.0) * 0.1;
    }
    let pad = (hi - lo) * 0.05;
    (if floor_zero && lo >= 0.0 { lo } else { lo - pad })..hi + pad
}

/// One panel of lines `(name, points)` with markers.
fn line_panel(area: &Area<'_>, caption: &str, y_desc: &str, series: &[(String, Vec<(f64, f64)>)]) -> crate::Result<()> {
    let xs = padded_range(series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)), false);
    let ys = padded_range(series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)), false);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(65)
        .build_cartesian_2d(xs, ys)
        .map_err(plot_err)?;
    let integers = |x: &f64| if (x - x.round()).abs() < 1e-9 { format!("{}", x.round() as i64) } else { String::new() };
    chart.configure_mesh().x_desc("epoch").y_desc(y_desc).x_label_formatter(&integers).draw().map_err(plot_err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Training curves of one cell: the total loss and the selection metric per epoch, one line per seed.
pub fn curves_svg(title: &str, runs: &[(u64, Vec<EpochLine>)], criterion: &str) -> crate::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let titled = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        let (left, right) = titled.split_horizontally(500);
        let pick = |f: fn(&EpochLine) -> Option<f64>| -> Vec<(String, Vec<(f64, f64)>)> {
            runs.iter()
                .map(|(seed, epochs)| {
                    (format!("seed {seed}"), epochs.iter().filter_map(|e| f(e).map(|v| (e.epoch as f64, v))).collect())
                })
                .collect()
        };
        line_panel(&left, "training loss (total)", "loss", &pick(|e| e.loss))?;
        line_panel(&right, &format!("{criterion} on the selection split"), criterion, &pick(|e| e.criterion))?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// A row of the bar chart: our mean ± std and the paper's value per metric (percent).
#[derive(Debug, Clone)]
pub struct BarRow {
    pub label: String,
    pub ours: Vec<Option<(f64, f64)>>,
    pub paper: Vec<Option<f64>>,
}

/// Grouped bars per row, ours (with ±1 std) beside the paper's, one panel per metric.
pub fn bars_svg(title: &str, metrics: &[String], rows: &[BarRow]) -> crate::Result<String> {
    let mut svg = String::new();
    let n = rows.len().max(1);
    let width = (metrics.len().max(1) as u32) * (60 + 52 * n as u32).max(360);
    {
        let root = SVGBackend::with_string(&mut svg, (width, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let titled = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        let panels = titled.split_evenly((1, metrics.len().max(1)));
        for (m, (area, metric)) in panels.iter().zip(metrics).enumerate() {
            let tops = rows.iter().flat_map(|r| {
                let ours = r.ours[m].map(|(mean, std)| mean + std);
                [ours, r.paper[m]]
            });
            let ys = padded_range(tops.flatten(), true);
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{metric} (%)"), ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(95)
                .y_label_area_size(45)
                .build_cartesian_2d(-0.5..(n as f64 - 0.5), ys)
                .map_err(plot_err)?;
            chart.configure_mesh().disable_x_mesh().x_labels(0).draw().map_err(plot_err)?;
            for (i, r) in rows.iter().enumerate() {
                let x = i as f64;
                if let Some((mean, std)) = r.ours[m] {
                    chart
                        .draw_series([Rectangle::new([(x - 0.38, 0.0), (x - 0.02, mean)], OURS.filled())])
                        .map_err(plot_err)?;
                    if std > 0.0 {
                        let (lo, hi) = (mean - std, mean + std);
                        let whisker = vec![
                            PathElement::new(vec![(x - 0.2, lo), (x - 0.2, hi)], BLACK.stroke_width(1)),
                            PathElement::new(vec![(x - 0.26, lo), (x - 0.14, lo)], BLACK.stroke_width(1)),
                            PathElement::new(vec![(x - 0.26, hi), (x - 0.14, hi)], BLACK.stroke_width(1)),
                        ];
                        chart.draw_series(whisker).map_err(plot_err)?;
                    }
                }
                if let Some(p) = r.paper[m] {
                    chart
                        .draw_series([Rectangle::new([(x + 0.02, 0.0), (x + 0.38, p)], PAPER.filled())])
                        .map_err(plot_err)?;
                }
                // The row's name under its bars, rotated, on the root (absolute) area.
                let (px, py) = chart.backend_coord(&(x, chart.y_range().start));
                let style = TextStyle::from(("sans-serif", 13).into_font().transform(FontTransform::Rotate270))
                    .pos(Pos::new(HPos::Right, VPos::Center));
                root.draw(&Text::new(r.label.clone(), (px, py + 6), style)).map_err(plot_err)?;
            }
            for (name, color) in [("ours (mean ± std)", OURS), ("paper", PAPER)] {
                chart
                    .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                    .map_err(plot_err)?
                    .label(name)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The t-SNE grid: one row per modality, columns original / teacher / student, points coloured by category.
pub fn tsne_svg(title: &str, fig: &Fig4) -> crate::Result<String> {
    let mut modalities: Vec<&str> = Vec::new();
    for p in &fig.panels {
        if !modalities.contains(&p.modality.as_str()) {
            modalities.push(&p.modality);
        }
    }
    let rows = modalities.len().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1050, 40 + 340 * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let titled = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        let areas = titled.split_evenly((rows, 3));
        for (index, (area, panel)) in areas.iter().zip(&fig.panels).enumerate() {
            let xs = padded_range(panel.points.iter().map(|p| p[0]), false);
            let ys = padded_range(panel.points.iter().map(|p| p[1]), false);
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{} · {} (kNN purity {:.2})", panel.modality, panel.source, panel.purity_features),
                    ("sans-serif", 15),
                )
                .margin(8)
                .build_cartesian_2d(xs, ys)
                .map_err(plot_err)?;
            chart.configure_mesh().disable_mesh().x_labels(0).y_labels(0).draw().map_err(plot_err)?;
            for (k, name) in fig.class_names.iter().enumerate() {
                let color = CLASS_COLORS[k % CLASS_COLORS.len()];
                let points = panel.points.iter().zip(&fig.classes).filter(|(_, &c)| c == k).map(|(p, _)| (p[0], p[1]));
                let series = chart.draw_series(points.map(|p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
                if index == 0 {
                    series.label(name.as_str()).legend(move |(x, y)| Circle::new((x + 6, y), 4, color.filled()));
                }
            }
            if index == 0 {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperLeft)
                    .draw()
                    .map_err(plot_err)?;
            }
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_labels() {
        let epochs = |k: f64| -> Vec<EpochLine> {
            (1..=4)
                .map(|e| EpochLine {
                    epoch: e,
                    loss: Some(1.0 / (e as f64 + k)),
                    criterion: Some(0.1 * e as f64),
                    secs: None,
                })
                .collect()
        };
        let svg = curves_svg("grcn-sgfd", &[(0, epochs(0.0)), (1, epochs(1.0))], "recall@20").unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("seed 1") && svg.contains("recall@20"));
        let rows = vec![
            BarRow { label: "GRCN".into(), ours: vec![Some((7.0, 0.5))], paper: vec![Some(13.2)] },
            BarRow { label: "SGFD_GRCN".into(), ours: vec![None], paper: vec![None] },
        ];
        let svg = bars_svg("Table 2", &["Recall@20".into()], &rows).unwrap();
        assert!(svg.contains("SGFD_GRCN") && svg.contains("rotate(270"), "{svg}");
        // A single point and no data at all still draw.
        assert!(curves_svg("x", &[(0, vec![EpochLine { epoch: 1, ..Default::default() }])], "r").is_ok());
    }
}

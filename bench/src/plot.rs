//! `--svg FILE`: the report as plots (plotters' SVG backend).
//!
//! One row per scenario, three panels each:
//! * the corrected latency percentile spectrum of every target (x: the
//!   percentile on a "nines" scale, 90% / 99% / 99.9% equally spaced; y: µs on
//!   a log scale), one line per round;
//! * throughput per target: a bar at the median, a whisker from min to max;
//! * CPU seconds per million messages: server user and system stacked, and
//!   the client next to it.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{SegmentValue, SegmentedCoord};
use plotters::coord::types::{RangedCoordf64, RangedCoordusize};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Report, ScenarioResult, Stat};

const ROW_HEIGHT: u32 = 360;
const WIDTH: u32 = 1500;
const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the SVG: {e}")
}

/// Writes the plots of `report` to `path` as SVG.
pub fn write_svg(path: &Path, report: &Report) -> Result<()> {
    let rows = report.scenarios.len().max(1) as u32;
    let root = SVGBackend::new(path, (WIDTH, ROW_HEIGHT * rows + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let m = &report.machine;
    let title = format!(
        "ringport-bench: {} x {}, kernel {}",
        m.cores, m.cpu_model, m.kernel
    );
    let (head, body) = root.split_vertically(40);
    head.titled(&title, ("sans-serif", 20)).map_err(err)?;
    let row_areas = body.split_evenly((rows as usize, 1));
    for (s, area) in report.scenarios.iter().zip(row_areas.iter()) {
        let panels = area.split_evenly((1, 3));
        spectrum(s, &panels[0])?;
        throughput(s, &panels[1])?;
        cpu(s, &panels[2])?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// What throughput and CPU are counted in: deliveries for relay-fanout
/// (one publish is delivered to many subscribers), handshakes for
/// tls-handshake, else messages.
fn unit(s: &ScenarioResult) -> &'static str {
    if s.load.relay.is_some() || s.load.mqtt.is_some() {
        "deliveries"
    } else if s.load.handshake.is_some() {
        "handshakes"
    } else {
        "messages"
    }
}

fn nines_label(x: &f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-x));
    match x.round() as i64 {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n if (x - x.round()).abs() < 1e-9 => format!("{:.*}%", (n - 2) as usize, q),
        _ => format!("{q:.3}%"),
    }
}

fn spectrum<DB: DrawingBackend>(
    s: &ScenarioResult,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let caption = format!("{}: latency by percentile (corrected)", s.scenario);
    let points: Vec<&[f64; 2]> = s
        .targets
        .iter()
        .flat_map(|t| t.runs.iter().flat_map(|r| r.spectrum.iter()))
        .collect();
    if points.is_empty() {
        return offered(s, area);
    }
    let xmax = points.iter().map(|p| p[0]).fold(1.0, f64::max).ceil();
    let ymin = points
        .iter()
        .map(|p| p[1])
        .fold(f64::MAX, f64::min)
        .max(0.1);
    let ymax = points
        .iter()
        .map(|p| p[1])
        .fold(0.0, f64::max)
        .max(ymin * 10.0);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, (ymin / 1.5..ymax * 1.5).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(xmax as usize + 1)
        .x_label_formatter(&nines_label)
        .y_label_formatter(&|v| format!("{v}"))
        .x_desc("percentile")
        .y_desc("latency (us)")
        .draw()
        .map_err(err)?;
    for (i, t) in s.targets.iter().enumerate() {
        let c = color(i);
        for (ri, r) in t.runs.iter().enumerate() {
            let series = chart
                .draw_series(LineSeries::new(
                    r.spectrum.iter().map(|p| (p[0], p[1])),
                    c.stroke_width(2),
                ))
                .map_err(err)?;
            if ri == 0 {
                series
                    .label(t.target.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// One-way scenarios: what the client offered next to what the server took,
/// per target (medians).
fn offered<DB: DrawingBackend>(
    s: &ScenarioResult,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let mut names = Vec::new();
    let mut bars = Vec::new();
    for (i, t) in s.targets.iter().enumerate() {
        let get = |k: &str| t.summary.get(k).map(|st| st.median).unwrap_or(0.0);
        names.push(format!("{} sent", t.target));
        bars.push((i, get("offered"), true));
        names.push(format!("{} got", t.target));
        bars.push((i, get("throughput"), false));
    }
    let ymax = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{}: sent (pale) vs got by the server", s.scenario),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(segments(names.len()), 0f64..ymax)
        .map_err(err)?;
    let fmt = segment_label(&names);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len())
        .x_label_formatter(&fmt)
        .x_label_style(("sans-serif", 11))
        .y_desc("datagrams per second")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1e3))
        .draw()
        .map_err(err)?;
    for (j, (ti, v, pale)) in bars.iter().enumerate() {
        let c = color(*ti);
        bar(
            &mut chart,
            j,
            0.0,
            *v,
            if *pale { c.mix(0.35) } else { c.mix(0.9) },
        )?;
        label(&mut chart, j, *v, format!("{:.0}k", v / 1e3))?;
    }
    Ok(())
}

/// `n` bar positions.
fn segments(n: usize) -> SegmentedCoord<RangedCoordusize> {
    (0..n.max(1) - 1).into_segmented()
}

type BarChart<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<SegmentedCoord<RangedCoordusize>, RangedCoordf64>>;

/// A bar at position `j` from `lo` to `hi`, with a gap on both sides.
fn bar<DB: DrawingBackend>(
    chart: &mut BarChart<'_, DB>,
    j: usize,
    lo: f64,
    hi: f64,
    color: RGBAColor,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let mut r = Rectangle::new(
        [
            (SegmentValue::Exact(j), lo),
            (SegmentValue::Exact(j + 1), hi),
        ],
        color.filled(),
    );
    r.set_margin(0, 0, 6, 6);
    chart.draw_series(std::iter::once(r)).map_err(err)?;
    Ok(())
}

/// A value written just above the top of bar `j`.
fn label<DB: DrawingBackend>(
    chart: &mut BarChart<'_, DB>,
    j: usize,
    y: f64,
    text: String,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart
        .draw_series(std::iter::once(Text::new(
            text,
            (SegmentValue::CenterOf(j), y),
            style,
        )))
        .map_err(err)?;
    Ok(())
}

fn segment_label(names: &[String]) -> impl Fn(&SegmentValue<usize>) -> String + '_ {
    move |v| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
            names.get(*i).cloned().unwrap_or_default()
        }
        SegmentValue::Last => String::new(),
    }
}

fn throughput<DB: DrawingBackend>(
    s: &ScenarioResult,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let names: Vec<String> = s.targets.iter().map(|t| t.target.clone()).collect();
    let stats: Vec<Option<Stat>> = s
        .targets
        .iter()
        .map(|t| t.summary.get("throughput").copied())
        .collect();
    let ymax = stats.iter().flatten().map(|st| st.max).fold(1.0, f64::max) * 1.15;
    let n = names.len();
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{}: throughput (median, min-max)", s.scenario),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(segments(n), 0f64..ymax)
        .map_err(err)?;
    let fmt = segment_label(&names);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&fmt)
        .y_desc(format!("{} per second", unit(s)))
        .y_label_formatter(&|v| format!("{:.0}k", v / 1e3))
        .draw()
        .map_err(err)?;
    for (i, st) in stats.iter().enumerate() {
        let Some(st) = st else { continue };
        bar(&mut chart, i, 0.0, st.median, color(i).mix(0.8))?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (SegmentValue::CenterOf(i), st.min),
                    (SegmentValue::CenterOf(i), st.max),
                ],
                BLACK.stroke_width(2),
            )))
            .map_err(err)?;
        label(&mut chart, i, st.max, format!("{:.0}k", st.median / 1e3))?;
    }
    Ok(())
}

fn cpu<DB: DrawingBackend>(
    s: &ScenarioResult,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    // Two bars per target: server (user below, system above) and client.
    let mut names = Vec::new();
    let mut bars: Vec<(usize, f64, f64)> = Vec::new(); // (target, lower, upper part)
    for (i, t) in s.targets.iter().enumerate() {
        let get = |k: &str| t.summary.get(k).map(|st| st.median);
        names.push(format!("{} server", t.target));
        bars.push((
            i,
            get("server_user_s_per_m").unwrap_or(0.0),
            get("server_sys_s_per_m").unwrap_or(0.0),
        ));
        names.push(format!("{} client", t.target));
        bars.push((i, get("client_cpu_s_per_m").unwrap_or(0.0), 0.0));
    }
    let ymax = bars.iter().map(|b| b.1 + b.2).fold(0.01, f64::max) * 1.15;
    let n = names.len();
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{}: CPU s/M {}, server user (dark) + sys; client (pale)",
                s.scenario,
                unit(s)
            ),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(segments(n), 0f64..ymax)
        .map_err(err)?;
    let fmt = segment_label(&names);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&fmt)
        .x_label_style(("sans-serif", 11))
        .y_desc(format!("CPU seconds / million {}", unit(s)))
        .draw()
        .map_err(err)?;
    for (j, (ti, lower, upper)) in bars.iter().enumerate() {
        let c = color(*ti);
        if j % 2 == 1 {
            bar(&mut chart, j, 0.0, *lower, c.mix(0.35))?;
        } else {
            bar(&mut chart, j, 0.0, *lower, c.mix(1.0))?;
            bar(&mut chart, j, *lower, lower + upper, c.mix(0.65))?;
        }
        label(
            &mut chart,
            j,
            lower + upper,
            format!("{:.2}", lower + upper),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::nines_label;

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(nines_label(&0.0), "0%");
        assert_eq!(nines_label(&1.0), "90%");
        assert_eq!(nines_label(&2.0), "99%");
        assert_eq!(nines_label(&3.0), "99.9%");
        assert_eq!(nines_label(&4.0), "99.99%");
    }
}

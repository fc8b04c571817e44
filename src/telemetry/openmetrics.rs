//! The OpenMetrics text exposition (1.0.0), for a scraper that asks for it while traces
//! are on: the one format that carries exemplars, here the trace of a request in the
//! bucket of the latency histogram it fell in. The `prometheus` crate writes only the
//! older text format, so its gathered families are written out here; the differences
//! are few: a counter's family is named without `_total` (its sample keeps it), `+Inf`
//! is spelled so, a bucket line may end in `# {labels} value timestamp`, and the
//! exposition ends with `# EOF`.

use std::fmt::{self, Write};

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (Prometheus asks for it first, then
/// for the text format: both are answers it takes); `q=0` refuses it.
pub fn is_asked_for(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f64>().ok())
                .is_some_and(|q| q == 0.0)
        });
        media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
    })
}

/// One exemplar: the ids of the trace, the value observed, when (Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub trace_id: String,
    pub span_id: String,
    pub value: f64,
    pub timestamp: f64,
}

/// Writes `families`; `exemplar` gives, for a histogram series and a bucket's index,
/// the exemplar to show on that bucket's line, if any.
pub fn write(
    out: &mut String,
    families: &[MetricFamily],
    exemplar: impl Fn(&str, &[LabelPair], usize) -> Option<Exemplar>,
) -> fmt::Result {
    for family in families {
        let name = family.name();
        let (kind, family_name) = match family.get_field_type() {
            // A counter without `_total` would be renamed here: left out instead (a test
            // holds every counter of farol's to the suffix).
            MetricType::COUNTER if !name.ends_with("_total") => continue,
            MetricType::COUNTER => ("counter", &name[..name.len() - "_total".len()]),
            MetricType::GAUGE => ("gauge", name),
            MetricType::HISTOGRAM => ("histogram", name),
            // farol makes neither
            MetricType::SUMMARY | MetricType::UNTYPED => continue,
        };
        writeln!(out, "# TYPE {family_name} {kind}")?;
        write!(out, "# HELP {family_name} ")?;
        escape(out, family.help())?;
        out.push('\n');
        for metric in family.get_metric() {
            match family.get_field_type() {
                MetricType::COUNTER => {
                    let value = metric.get_counter().get_value();
                    sample(out, family_name, "_total", metric, None, value)?;
                }
                MetricType::GAUGE => {
                    sample(out, name, "", metric, None, metric.get_gauge().get_value())?;
                }
                MetricType::HISTOGRAM => {
                    let histogram = metric.get_histogram();
                    let mut bound_text = String::new();
                    // +Inf is written last, always, from the sample count
                    let finite = histogram
                        .get_bucket()
                        .iter()
                        .filter(|b| b.upper_bound().is_finite());
                    for (index, bucket) in finite.enumerate() {
                        bound_text.clear();
                        number(&mut bound_text, bucket.upper_bound())?;
                        let count = bucket.cumulative_count() as f64;
                        sample(out, name, "_bucket", metric, Some(&bound_text), count)?;
                        end_with_exemplar(out, exemplar(name, metric.get_label(), index))?;
                    }
                    let count = histogram.get_sample_count() as f64;
                    let last = histogram
                        .get_bucket()
                        .iter()
                        .filter(|b| b.upper_bound().is_finite())
                        .count();
                    sample(out, name, "_bucket", metric, Some("+Inf"), count)?;
                    end_with_exemplar(out, exemplar(name, metric.get_label(), last))?;
                    sample(out, name, "_count", metric, None, count)?;
                    out.push('\n');
                    sample(out, name, "_sum", metric, None, histogram.get_sample_sum())?;
                    out.push('\n');
                    continue;
                }
                MetricType::SUMMARY | MetricType::UNTYPED => unreachable!("skipped above"),
            }
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    Ok(())
}

/// `name{labels,le="…"} value`, without the line's end.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    metric: &Metric,
    le: Option<&str>,
    value: f64,
) -> fmt::Result {
    out.push_str(name);
    out.push_str(suffix);
    let labels = metric.get_label();
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for pair in labels {
            if !first {
                out.push(',');
            }
            first = false;
            label(out, pair.name(), pair.value())?;
        }
        if let Some(le) = le {
            if !first {
                out.push(',');
            }
            label(out, "le", le)?;
        }
        out.push('}');
    }
    out.push(' ');
    number(out, value)
}

fn end_with_exemplar(out: &mut String, exemplar: Option<Exemplar>) -> fmt::Result {
    if let Some(e) = exemplar {
        // ids are lowercase hex: nothing to escape
        write!(
            out,
            " # {{trace_id=\"{}\",span_id=\"{}\"}} ",
            e.trace_id, e.span_id
        )?;
        number(out, e.value)?;
        write!(out, " {:.3}", e.timestamp)?;
    }
    out.push('\n');
    Ok(())
}

fn label(out: &mut String, name: &str, value: &str) -> fmt::Result {
    out.push_str(name);
    out.push_str("=\"");
    escape(out, value)?;
    out.push('"');
    Ok(())
}

fn escape(out: &mut String, text: &str) -> fmt::Result {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Ok(())
}

fn number(out: &mut String, value: f64) -> fmt::Result {
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        Ok(())
    } else if value.is_nan() {
        out.push_str("NaN");
        Ok(())
    } else {
        write!(out, "{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_asks_for_it_first_and_a_plain_scraper_does_not() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(is_asked_for(prometheus));
        assert!(!is_asked_for("text/plain;version=0.0.4"));
        assert!(!is_asked_for("*/*"));
        assert!(is_asked_for("Application/OpenMetrics-Text; version=1.0.0"));
        assert!(!is_asked_for("application/openmetrics-text;q=0,text/plain"));
    }
}

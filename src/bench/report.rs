//! The results table: one row per figure, one column per target, and a `wick / other`
//! ratio column when there are two targets.

use super::scenario::Figures;

/// A row: its label, then one value per target (`None`: not measured for that target) and
/// how many decimals to print.
struct Row {
    label: String,
    values: Vec<Option<f64>>,
    decimals: usize,
}

/// Lay out `figures` (one per target, in `names` order) as an aligned text table.
pub fn render(names: &[String], figures: &[Figures]) -> String {
    render_rows(names, &rows(figures))
}

fn rows(figures: &[Figures]) -> Vec<Row> {
    let col = |f: fn(&Figures) -> Option<f64>| figures.iter().map(f).collect::<Vec<_>>();
    let prompt = figures.first().map(|f| f.pp_prompt_tokens).unwrap_or(0.0);
    let short = figures.first().map(|f| f.ttft_prompt_tokens).unwrap_or(0.0);
    let mut rows = vec![
        Row {
            label: format!("pp tok/s ({prompt:.0}-token prompt)"),
            values: col(|f| Some(f.pp_tok_s)),
            decimals: 1,
        },
        Row {
            label: "decode tok/s".into(),
            values: col(|f| Some(f.decode_tok_s)),
            decimals: 1,
        },
        Row {
            label: if short > 0.0 {
                format!("TTFT ms ({short:.0}-token prompt)")
            } else {
                "TTFT ms".into()
            },
            values: col(|f| Some(f.ttft_ms)),
            decimals: 0,
        },
    ];
    // Every target measured the same stream counts, in the same order.
    let levels = figures.first().map(|f| f.concurrent.len()).unwrap_or(0);
    type Pick = fn(&super::scenario::ConcurrentFigures) -> f64;
    for i in 0..levels {
        let streams = figures[0].concurrent[i].streams;
        let at = |pick: Pick| {
            figures
                .iter()
                .map(|f| f.concurrent.get(i).map(pick))
                .collect::<Vec<_>>()
        };
        let per_level: [(String, Pick, usize); 5] = [
            (
                format!("decode tok/s, {streams} streams (sum)"),
                |c| c.aggregate_tok_s,
                1,
            ),
            (
                format!("TTFT p50 ms, {streams} streams"),
                |c| c.ttft_p50_ms,
                0,
            ),
            (
                format!("TTFT p95 ms, {streams} streams"),
                |c| c.ttft_p95_ms,
                0,
            ),
            (
                format!("TTFT p50 ms, {streams} x {prompt:.0}-token prompts"),
                |c| c.long_ttft_p50_ms,
                0,
            ),
            (
                format!("TTFT p95 ms, {streams} x {prompt:.0}-token prompts"),
                |c| c.long_ttft_p95_ms,
                0,
            ),
        ];
        for (label, pick, decimals) in per_level {
            rows.push(Row {
                label,
                values: at(pick),
                decimals,
            });
        }
    }
    if figures.iter().any(|f| f.peak_rss_mib.is_some()) {
        rows.push(Row {
            label: "peak RSS MiB".into(),
            values: col(|f| f.peak_rss_mib),
            decimals: 0,
        });
    }
    if figures.iter().any(|f| f.weight_mib.is_some()) {
        rows.push(Row {
            label: "weights MiB (as held)".into(),
            values: col(|f| f.weight_mib),
            decimals: 0,
        });
        rows.push(Row {
            label: "KV cache MiB (all slots)".into(),
            values: col(|f| f.kv_mib),
            decimals: 0,
        });
    }
    if figures.iter().any(|f| f.prefix_cache_hit_pct.is_some()) {
        rows.push(Row {
            label: "prefix cache hits % of prompt tokens".into(),
            values: col(|f| f.prefix_cache_hit_pct),
            decimals: 1,
        });
    }
    rows
}

fn render_rows(names: &[String], rows: &[Row]) -> String {
    let compare = names.len() == 2;
    let mut header = vec![String::new()];
    header.extend(names.iter().cloned());
    if compare {
        header.push(format!("{} / {}", names[0], names[1]));
    }
    let mut cells: Vec<Vec<String>> = vec![header];
    for row in rows {
        let mut line = vec![row.label.clone()];
        line.extend(row.values.iter().map(|v| match v {
            Some(v) => format!("{v:.*}", row.decimals),
            None => "-".into(),
        }));
        if compare {
            line.push(match (row.values[0], row.values[1]) {
                (Some(a), Some(b)) if b != 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            });
        }
        cells.push(line);
    }

    let columns = cells[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, line) in cells.iter().enumerate() {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            // Labels read left to right; numbers line up on their last digit.
            if c == 0 {
                text.push_str(&format!("{cell:<w$}", w = widths[c]));
            } else {
                text.push_str(&format!("  {cell:>w$}", w = widths[c]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
        if i == 0 {
            let total = widths.iter().sum::<usize>() + 2 * (columns - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::scenario::ConcurrentFigures;
    use super::*;

    fn wick() -> Figures {
        Figures {
            pp_prompt_tokens: 509.0,
            pp_tok_s: 123.45,
            decode_tok_s: 74.0,
            ttft_ms: 81.6,
            ttft_prompt_tokens: 0.0,
            concurrent: vec![],
            peak_rss_mib: Some(250.2),
            ..Figures::default()
        }
    }

    #[test]
    fn single_target_table() {
        let table = render(&["wick".into()], &[wick()]);
        let expected = concat!(
            "                              wick\n",
            "----------------------------------\n",
            "pp tok/s (509-token prompt)  123.5\n",
            "decode tok/s                  74.0\n",
            "TTFT ms                         82\n",
            "peak RSS MiB                   250\n",
        );
        assert_eq!(table, expected);
    }

    #[test]
    fn comparison_adds_a_ratio_column_and_dashes() {
        let other = Figures {
            pp_prompt_tokens: 509.0,
            pp_tok_s: 500.0,
            decode_tok_s: 185.0,
            ttft_ms: 40.8,
            ttft_prompt_tokens: 31.0,
            concurrent: vec![],
            ..Figures::default()
        };
        let table = render(&["wick".into(), "llamacpp".into()], &[wick(), other]);
        let expected = concat!(
            "                              wick  llamacpp  wick / llamacpp\n",
            "-------------------------------------------------------------\n",
            "pp tok/s (509-token prompt)  123.5     500.0            0.25x\n",
            "decode tok/s                  74.0     185.0            0.40x\n",
            "TTFT ms                         82        41            2.00x\n",
            "peak RSS MiB                   250         -                -\n",
        );
        assert_eq!(table, expected);
    }

    #[test]
    fn memory_rows_come_from_wick_s_health() {
        let mut f = wick();
        f.read_engine_health(&serde_json::json!({
            "weight_bytes": 300u64 << 20,
            "kv_bytes": 90u64 << 20,
            "prompt_tokens": 200,
            "prefix_cache_hits": 50,
        }));
        let table = render(&["wick".into()], &[f]);
        let value = |label: &str| {
            let line = table.lines().find(|l| l.starts_with(label)).unwrap();
            line[label.len()..].trim().to_string()
        };
        assert_eq!(value("weights MiB (as held)"), "300", "{table}");
        assert_eq!(value("KV cache MiB (all slots)"), "90", "{table}");
        assert_eq!(
            value("prefix cache hits % of prompt tokens"),
            "25.0",
            "{table}"
        );
    }

    #[test]
    fn concurrent_rows_follow_the_single_stream_ones() {
        let mut f = wick();
        f.peak_rss_mib = None;
        f.ttft_prompt_tokens = 31.0;
        f.concurrent.push(ConcurrentFigures {
            streams: 4,
            aggregate_tok_s: 150.0,
            ttft_p50_ms: 120.0,
            ttft_p95_ms: 170.0,
            long_ttft_p50_ms: 900.0,
            long_ttft_p95_ms: 1500.0,
        });
        let table = render(&["wick".into()], &[f]);
        let labels: Vec<&str> = table
            .lines()
            .skip(2)
            .map(|l| l.rsplit_once("  ").unwrap().0.trim())
            .collect();
        assert_eq!(
            labels,
            [
                "pp tok/s (509-token prompt)",
                "decode tok/s",
                "TTFT ms (31-token prompt)",
                "decode tok/s, 4 streams (sum)",
                "TTFT p50 ms, 4 streams",
                "TTFT p95 ms, 4 streams",
                "TTFT p50 ms, 4 x 509-token prompts",
                "TTFT p95 ms, 4 x 509-token prompts",
            ]
        );
    }
}

//! Output for people (aligned tables, `key: value` details) and for
//! scripts (`--json`: the API's `data`, pretty-printed).

use serde_json::Value;

use crate::error::CliError;

/// Longest cell shown in a table; longer ones end in `…`.
const MAX_CELL: usize = 48;

/// A table with a header row, printed with columns aligned; long cells are
/// cut, except in columns of ids, which people copy.
pub struct Table {
    headers: Vec<&'static str>,
    whole: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            whole: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Never cuts the cells of these columns.
    pub fn whole(mut self, columns: &[&str]) -> Self {
        for (header, whole) in self.headers.iter().zip(&mut self.whole) {
            *whole |= columns.contains(header);
        }
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        let cells = cells
            .iter()
            .enumerate()
            .map(|(i, c)| cell(c, self.whole.get(i).copied().unwrap_or(false)))
            .collect();
        self.rows.push(cells);
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let padded: Vec<String> = cells
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            format!("{}\n", padded.join("  ").trim_end())
        };
        let mut out = line(&mut self.headers.iter().copied());
        for row in &self.rows {
            out.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        out
    }
}

/// One line, at most [`MAX_CELL`] characters unless `whole`.
fn cell(text: &str, whole: bool) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if whole || flat.chars().count() <= MAX_CELL {
        flat
    } else {
        let kept: String = flat.chars().take(MAX_CELL - 1).collect();
        format!("{kept}…")
    }
}

/// A JSON value as a person reads it in a cell: strings bare, null as `-`.
pub fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| text(Some(i)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// `field` of `value`, as [`text`].
pub fn field(value: &Value, name: &str) -> String {
    text(value.get(name))
}

/// `key: value` lines for one object, in the API's order; nested objects
/// and arrays stay JSON.
pub fn details(value: &Value) -> String {
    let Some(object) = value.as_object() else {
        return format!("{value}\n");
    };
    let width = object.keys().map(|k| k.chars().count()).max().unwrap_or(0);
    object
        .iter()
        .map(|(k, v)| {
            let shown = match v {
                Value::Object(_) | Value::Array(_) => {
                    serde_json::to_string(v).unwrap_or_else(|_| v.to_string())
                }
                _ => text(Some(v)),
            };
            format!("{k:<width$}  {shown}\n")
        })
        .collect()
}

/// The line under a list that was cut by `--limit`, if it was.
pub fn more(shown: usize, total: Option<u64>) -> Option<String> {
    total
        .filter(|&total| total > shown as u64)
        .map(|total| format!("({shown} of {total} shown; raise --limit, at most 100, for more)"))
}

/// Prints `data` for scripts.
pub fn json(data: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(data)
        .map_err(|e| CliError::Failed(format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_line_up() {
        let mut table = Table::new(&["ID", "NAME"]);
        table.row(vec!["wh_1".into(), "short".into()]);
        table.row(vec!["wh_123456".into(), "longer name".into()]);
        assert_eq!(
            table.render(),
            "ID         NAME\nwh_1       short\nwh_123456  longer name\n"
        );
    }

    #[test]
    fn long_and_multi_line_cells_are_cut_to_one_line() {
        let mut table = Table::new(&["ERROR"]);
        table.row(vec![format!("first\nsecond {}", "x".repeat(100))]);
        let rendered = table.render();
        let row = rendered.lines().nth(1).expect("a row");
        assert_eq!(row.chars().count(), MAX_CELL);
        assert!(row.starts_with("first second x"), "{row}");
        assert!(row.ends_with('…'), "{row}");
    }

    #[test]
    fn id_columns_are_never_cut() {
        let long = "dlv_".repeat(20);
        let mut table = Table::new(&["ID", "NOTE"]).whole(&["ID"]);
        table.row(vec![long.clone(), long.clone()]);
        let rendered = table.render();
        let row = rendered.lines().nth(1).expect("a row");
        assert!(row.starts_with(&format!("{long}  dlv_")), "{row}");
        assert!(row.ends_with('…'), "{row}");
    }

    #[test]
    fn a_short_row_does_not_break_the_table() {
        let mut table = Table::new(&["A", "B"]);
        table.row(vec!["only".into()]);
        assert_eq!(table.render(), "A     B\nonly\n");
    }

    #[test]
    fn a_cut_list_says_so() {
        assert_eq!(
            more(2, Some(6)).as_deref(),
            Some("(2 of 6 shown; raise --limit, at most 100, for more)")
        );
        assert_eq!(more(6, Some(6)), None);
        assert_eq!(more(2, None), None);
    }

    #[test]
    fn values_read_as_text() {
        assert_eq!(text(None), "-");
        assert_eq!(text(Some(&Value::Null)), "-");
        assert_eq!(text(Some(&json!("a"))), "a");
        assert_eq!(text(Some(&json!(["a", "b"]))), "a,b");
        assert_eq!(text(Some(&json!(3.5))), "3.5");
        assert_eq!(
            details(&json!({"id": "x", "events": ["a"], "n": 1})),
            "id      x\nevents  [\"a\"]\nn       1\n"
        );
    }
}

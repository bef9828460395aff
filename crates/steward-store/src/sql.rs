//! Multi-row statements, written once for both backends.
//!
//! The only difference between SQLite and PostgreSQL here is how parameters are written:
//! `$1, $2, …` on PostgreSQL; `?` on SQLite, bound in order (sqlx looks up the name of every
//! numbered parameter when it binds, and SQLite finds a name by a linear scan, so `$N` costs
//! O(N²) in a statement of hundreds of parameters). Statements with a handful of parameters
//! use `$N` on both backends (SQLite reads them as numbered parameters).
//!
//! A statement takes at most [`MAX_ROWS`] rows, padded with rows of NULLs to a power of two,
//! which the statement skips: a connection prepares a few statement texts once and keeps them,
//! instead of one per batch size.

use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;
use sqlx::AnyConnection;
use std::fmt::Write as _;
use std::sync::OnceLock;

/// A query on the Any driver, with its arguments.
pub(crate) type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

/// Most rows in one multi-row statement.
pub(crate) const MAX_ROWS: usize = 128;

/// One parameter, owned, so that rows can be laid out before they are bound. A NULL keeps its
/// type (PostgreSQL types a `VALUES` list from its parameters).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Text(Option<String>),
    Int(Option<i64>),
}

impl Value {
    /// A NULL of the same type.
    fn null(&self) -> Value {
        match self {
            Value::Text(_) => Value::Text(None),
            Value::Int(_) => Value::Int(None),
        }
    }

    pub(crate) fn bind(self, query: AnyQuery<'_>) -> AnyQuery<'_> {
        match self {
            Value::Text(value) => query.bind(value),
            Value::Int(value) => query.bind(value),
        }
    }
}

/// How a backend writes parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub(crate) fn of(conn: &AnyConnection) -> Self {
        if conn.backend_name() == "SQLite" {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        }
    }

    /// `(…), (…)`: `rows` tuples of `width` parameters.
    fn values(self, rows: usize, width: usize) -> String {
        let mut out = String::with_capacity(rows * width * 5);
        for row in 0..rows {
            out.push_str(if row == 0 { "(" } else { "), (" });
            for column in 0..width {
                if column > 0 {
                    out.push_str(", ");
                }
                match self {
                    Dialect::Postgres => {
                        let _ = write!(out, "${}", row * width + column + 1);
                    }
                    Dialect::Sqlite => out.push('?'),
                }
            }
        }
        out.push(')');
        out
    }
}

/// A statement over a `VALUES` list of rows of `width` parameters. `sql` writes the statement
/// around the list; it must skip rows whose first value is NULL (the padding).
pub(crate) struct MultiRow {
    width: usize,
    sql: fn(&str) -> String,
    /// The text for each size (1, 2, 4 … [`MAX_ROWS`] rows), per dialect, built once.
    postgres: OnceLock<Vec<String>>,
    sqlite: OnceLock<Vec<String>>,
}

/// One statement of a [`MultiRow`], ready to bind.
pub(crate) struct Statement {
    pub(crate) sql: &'static str,
    pub(crate) values: Vec<Value>,
}

impl Statement {
    pub(crate) fn query(self) -> AnyQuery<'static> {
        self.values
            .into_iter()
            .fold(sqlx::query(self.sql), |query, value| value.bind(query))
    }
}

impl MultiRow {
    pub(crate) const fn new(width: usize, sql: fn(&str) -> String) -> Self {
        MultiRow {
            width,
            sql,
            postgres: OnceLock::new(),
            sqlite: OnceLock::new(),
        }
    }

    /// `rows` (each [`MultiRow`]'s width of values) cut into statements.
    pub(crate) fn statements(
        &'static self,
        dialect: Dialect,
        rows: Vec<Vec<Value>>,
    ) -> Vec<Statement> {
        let texts = match dialect {
            Dialect::Postgres => &self.postgres,
            Dialect::Sqlite => &self.sqlite,
        };
        let texts = texts.get_or_init(|| {
            (0..=MAX_ROWS.trailing_zeros())
                .map(|i| (self.sql)(&dialect.values(1 << i, self.width)))
                .collect()
        });
        rows.chunks(MAX_ROWS)
            .map(|chunk| {
                let size = chunk.len().next_power_of_two();
                let mut values = Vec::with_capacity(size * self.width);
                for row in chunk {
                    debug_assert_eq!(row.len(), self.width);
                    values.extend(row.iter().cloned());
                }
                // Padding NULLs of each column's type (PostgreSQL matches a `VALUES` column's
                // types across its rows).
                let nulls: Vec<Value> = chunk[0].iter().map(Value::null).collect();
                while values.len() < size * self.width {
                    values.extend(nulls.iter().cloned());
                }
                Statement {
                    sql: &texts[size.trailing_zeros() as usize],
                    values,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_across_rows_or_in_order() {
        assert_eq!(Dialect::Postgres.values(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(Dialect::Sqlite.values(2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn statements_are_a_few_sizes_padded_with_nulls() {
        static ONE: MultiRow = MultiRow::new(1, |values| values.to_owned());
        let rows = |n: usize| (0..n).map(|i| vec![Value::Int(Some(i as i64))]).collect();
        let sizes = |n| {
            ONE.statements(Dialect::Sqlite, rows(n))
                .iter()
                .map(|s| (s.sql.matches('?').count(), s.values.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(5), [(8, 8)]);
        assert_eq!(sizes(MAX_ROWS + 3), [(MAX_ROWS, MAX_ROWS), (4, 4)]);
        let padded = ONE.statements(Dialect::Postgres, rows(3));
        assert_eq!(padded[0].sql, "($1), ($2), ($3), ($4)");
        assert_eq!(padded[0].values[3], Value::Int(None));
    }
}

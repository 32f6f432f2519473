//! Identifiers as PostgreSQL resolves them, and which sharding rule a table
//! name falls under.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

use crate::topology::Topology;

/// An identifier as PostgreSQL reads it: unquoted folds to lower case,
/// quoted stays as written.
pub(crate) fn norm(id: &Ident) -> String {
    if id.quote_style.is_some() { id.value.clone() } else { id.value.to_ascii_lowercase() }
}

/// Does `id` name `s` (already normalised)? Does not allocate.
pub(crate) fn ident_is(id: &Ident, s: &str) -> bool {
    if id.quote_style.is_some() {
        id.value == s
    } else {
        id.value.len() == s.len() && id.value.bytes().zip(s.bytes()).all(|(a, b)| a.to_ascii_lowercase() == b)
    }
}

/// What a table name refers to, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableKind {
    /// A sharded table: index into [`Topology::tables`].
    Sharded(usize),
    /// A system catalog (`pg_catalog`, `information_schema`): the same on
    /// every server, so it joins with anything.
    Catalog,
    /// Any other table: it lives on the default shard only.
    Plain,
}

/// Classify a table by its (normalised) schema and name.
///
/// A rule naming a schema matches that schema, and also an unqualified name
/// (which `search_path` may well resolve to it: treating it as sharded is
/// the choice that never silently reads one shard's part of a sharded
/// table). A rule without a schema matches the table in any schema. The
/// most specific match wins.
pub(crate) fn classify(topo: &Topology, schema: Option<&str>, table: &str) -> TableKind {
    let mut any_schema = None;
    let mut unqualified = None;
    for (i, rule) in topo.tables.iter().enumerate() {
        if rule.table != table {
            continue;
        }
        match (rule.schema.as_deref(), schema) {
            (Some(r), Some(s)) if r == s => return TableKind::Sharded(i),
            (Some(_), Some(_)) => {}
            (None, _) => {
                any_schema.get_or_insert(i);
            }
            (Some(_), None) => {
                unqualified.get_or_insert(i);
            }
        }
    }
    if let Some(i) = any_schema.or(unqualified) {
        return TableKind::Sharded(i);
    }
    let catalog = match schema {
        Some(s) => s == "pg_catalog" || s == "information_schema",
        None => table.starts_with("pg_"),
    };
    if catalog { TableKind::Catalog } else { TableKind::Plain }
}

/// A table name's schema and table parts, normalised (`db.schema.table`
/// keeps the last two). `None` for names that are not plain identifiers.
pub(crate) fn table_parts(name: &ObjectName) -> Option<(Option<String>, String)> {
    let ident = |p: &ObjectNamePart| match p {
        ObjectNamePart::Identifier(i) => Some(norm(i)),
        ObjectNamePart::Function(_) => None,
    };
    match name.0.as_slice() {
        [t] => Some((None, ident(t)?)),
        [.., s, t] => Some((Some(ident(s)?), ident(t)?)),
        [] => None,
    }
}

/// How a table is shown in reasons: `schema.table` or `table`.
pub(crate) fn display(schema: Option<&str>, table: &str) -> String {
    match schema {
        Some(s) => format!("{s}.{table}"),
        None => table.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::tests::topology;

    #[test]
    fn idents() {
        assert!(ident_is(&Ident::new("Owners"), "owners"));
        assert!(!ident_is(&Ident::with_quote('"', "Owners"), "owners"));
        assert!(ident_is(&Ident::with_quote('"', "Owners"), "Owners"));
        assert!(!ident_is(&Ident::new("owner"), "owners"));
        assert_eq!(norm(&Ident::new("AbC")), "abc");
        assert_eq!(norm(&Ident::with_quote('"', "AbC")), "AbC");
    }

    #[test]
    fn rules() {
        let t = topology();
        assert_eq!(classify(&t, None, "owners"), TableKind::Sharded(0));
        assert_eq!(classify(&t, Some("public"), "owners"), TableKind::Sharded(0));
        assert_eq!(classify(&t, Some("app"), "events"), TableKind::Sharded(4));
        assert_eq!(classify(&t, None, "events"), TableKind::Sharded(4));
        assert_eq!(classify(&t, Some("public"), "events"), TableKind::Plain);
        assert_eq!(classify(&t, None, "settings"), TableKind::Plain);
        assert_eq!(classify(&t, None, "pg_class"), TableKind::Catalog);
        assert_eq!(classify(&t, Some("information_schema"), "tables"), TableKind::Catalog);
        assert_eq!(classify(&t, None, "Owners"), TableKind::Plain);
    }
}

//! The statements that write: INSERT, UPDATE, DELETE, MERGE. Each opens a
//! scope holding the written table (and its FROM / USING / source), and
//! refuses what would move a row to another shard.

use sqlparser::ast::{
    Assignment, AssignmentTarget, ConflictTarget, Delete, Expr, FromTable, Ident, Insert, Merge, MergeAction,
    MergeClauseKind, MergeUpdateKind, ObjectName, ObjectNamePart, OnConflictAction, OnInsert, SetExpr, TableObject,
    Update, UpdateTableFromKind,
};

use super::{Conds, Walk, flatten_and};
use crate::analyze::KeySource;
use crate::analyze::keys::key_source;
use crate::analyze::names::ident_is;

impl Walk<'_> {
    /// A written key column: the statement would move rows between shards.
    fn check_assignments(&mut self, node: usize, assignments: &[Assignment], excluded_ok: bool) {
        let column = &self.topo.tables[self.nodes[node].rule].column;
        let sets_key =
            |name: &ObjectName| matches!(name.0.first(), Some(ObjectNamePart::Identifier(i)) if ident_is(i, column));
        for a in assignments {
            let hit = match &a.target {
                AssignmentTarget::ColumnName(n) => sets_key(n),
                AssignmentTarget::Tuple(ns) => ns.iter().any(sets_key),
            };
            // `ON CONFLICT (k) DO UPDATE SET k = excluded.k` keeps the key.
            let same = excluded_ok
                && matches!(&a.value, Expr::CompoundIdentifier(p)
                    if p.len() == 2 && ident_is(&p[0], "excluded") && ident_is(&p[1], column));
            if hit && !same {
                let table = self.nodes[node].table.clone();
                self.fail(|| format!("changing the shard key {table}.{column}"));
                return;
            }
        }
    }

    pub(super) fn enter_update(&mut self, u: &Update, top: bool) {
        self.note_write(top, "UPDATE");
        self.push_scope(top);
        let mut c = Conds::default();
        let target = self.register_target(&u.table.relation);
        if let Some(n) = target {
            self.check_assignments(n, &u.assignments, false);
        }
        for j in &u.table.joins {
            self.register_factor(&j.relation, &mut c);
        }
        if let Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) = &u.from {
            for twj in from {
                self.register(twj, &mut c, false);
            }
        }
        if let Some(w) = &u.selection {
            flatten_and(w, &mut c.keyed);
        }
        self.apply(&c);
    }

    pub(super) fn enter_delete(&mut self, d: &Delete, top: bool) {
        self.note_write(top, "DELETE");
        self.push_scope(top);
        let mut c = Conds::default();
        let (FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables)) = &d.from;
        for (i, twj) in tables.iter().enumerate() {
            if i == 0 {
                self.register_target(&twj.relation);
                for j in &twj.joins {
                    self.register_factor(&j.relation, &mut c);
                }
            } else {
                self.register(twj, &mut c, false);
            }
        }
        for twj in d.using.iter().flatten() {
            self.register(twj, &mut c, false);
        }
        if let Some(w) = &d.selection {
            flatten_and(w, &mut c.keyed);
        }
        self.apply(&c);
    }

    pub(super) fn enter_insert(&mut self, i: &Insert, top: bool) {
        self.note_write(top, "INSERT");
        self.push_scope(top);
        let TableObject::TableName(name) = &i.table else {
            self.fail(|| "INSERT into a table function".to_owned());
            return;
        };
        let Some(node) = self.register_target_name(name, i.table_alias.as_ref().map(|a| &a.alias)) else { return };
        if let Some(OnInsert::OnConflict(oc)) = &i.on
            && let OnConflictAction::DoUpdate(du) = &oc.action
        {
            let column = &self.topo.tables[self.nodes[node].rule].column;
            let on_key = matches!(&oc.conflict_target, Some(ConflictTarget::Columns { columns, .. })
                if columns.iter().any(|c| ident_is(c, column)));
            self.check_assignments(node, &du.assignments, on_key);
        }
        let table = self.nodes[node].table.clone();
        if !top {
            self.fail(|| format!("INSERT into sharded table {table} inside WITH"));
            return;
        }
        let rule = self.nodes[node].rule;
        let rows = insert_rows(i, &self.topo.tables[rule].column, &table).map(|rows| (rule, rows));
        self.insert = Some(rows);
    }

    fn register_target_name(&mut self, name: &ObjectName, alias: Option<&Ident>) -> Option<usize> {
        let (node, plain) = self.register_table(name, alias);
        if let Some(p) = plain {
            self.plain_target.get_or_insert(p);
        }
        node
    }

    pub(super) fn enter_merge(&mut self, m: &Merge, top: bool) {
        self.note_write(top, "MERGE");
        self.push_scope(top);
        let mut c = Conds::default();
        let target = self.register_target(&m.table);
        self.register_factor(&m.source, &mut c);
        // WHEN NOT MATCHED BY SOURCE acts on target rows the ON rejects.
        let by_source = m.clauses.iter().any(|cl| cl.clause_kind == MergeClauseKind::NotMatchedBySource);
        flatten_and(&m.on, if by_source { &mut c.links } else { &mut c.keyed });
        if let Some(n) = target {
            for cl in &m.clauses {
                match &cl.action {
                    MergeAction::Insert(_) => {
                        let table = self.nodes[n].table.clone();
                        self.fail(|| format!("MERGE ... INSERT into sharded table {table}"));
                    }
                    MergeAction::Update(u) => {
                        if let MergeUpdateKind::Set(assignments) = &u.kind {
                            self.check_assignments(n, assignments, false);
                        }
                    }
                    _ => {}
                }
            }
        }
        self.apply(&c);
    }
}

/// One key per row of `INSERT INTO t (cols) VALUES (...), ...`.
fn insert_rows(i: &Insert, column: &str, table: &str) -> Result<Vec<KeySource>, String> {
    if i.columns.is_empty() {
        return Err(format!("INSERT into sharded table {table} must name its columns"));
    }
    let is_key = |c: &ObjectName| matches!(c.0.last(), Some(ObjectNamePart::Identifier(id)) if ident_is(id, column));
    let Some(pos) = i.columns.iter().position(is_key) else {
        return Err(format!("INSERT into sharded table {table} without its key column {column}"));
    };
    let Some(src) = &i.source else {
        return Err(format!("INSERT into sharded table {table} without its key column {column}"));
    };
    let SetExpr::Values(values) = &*src.body else {
        return Err(format!("INSERT ... SELECT into sharded table {table}"));
    };
    if src.with.is_some() {
        return Err(format!("INSERT ... SELECT into sharded table {table}"));
    }
    values
        .rows
        .iter()
        .enumerate()
        .map(|(r, row)| {
            row.content
                .get(pos)
                .and_then(key_source)
                .ok_or_else(|| format!("INSERT into sharded table {table}: row {} has no constant {column}", r + 1))
        })
        .collect()
}

//! DML through sqlparser: one walk over the tree decides whether the
//! statement writes, whether a replica may run it, and which shards it
//! touches.
//!
//! The walk keeps a stack of scopes, one per SELECT (and one per
//! INSERT/UPDATE/DELETE/MERGE), holding the tables its FROM names. Every
//! occurrence of a sharded table is a *node*. The conjuncts of a scope's
//! WHERE (and of its inner joins' ON) give nodes their keys (`k = 5`,
//! `k IN (...)`, `k = ANY($1)`), and equalities between two key columns
//! (`p.owner_id = o.owner_id`, also from an outer join or a correlated
//! subquery) put nodes into one *component*: rows that can only meet on
//! one shard.
//!
//! ```text
//!   SELECT ... FROM owners o JOIN pets p ON p.owner_id = o.owner_id
//!   WHERE o.owner_id = 5
//!       nodes: o (key 5), p      components: {o, p} keyed 5  -> Keyed
//!
//!   SELECT ... FROM owners o, pets p WHERE o.name = p.name
//!       components: {o}, {p}, both keyless                   -> Unsupported
//! ```
//!
//! A component takes its keys from the nodes of its outermost scope only:
//! a key inside a correlated subquery restricts the subquery, not the rows
//! the statement returns (think `NOT EXISTS`). The statement is `Keyed`
//! when every component has the same keys, `AllShards` when there is one
//! keyless component whose nodes sit in the main SELECT (or the written
//! table) and in expression subqueries tied to it by the key, and
//! `Unsupported` otherwise. A derived table or CTE over a sharded table
//! without a key is unsupported: its rows would be computed per shard.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, ConflictTarget, Delete, Distinct, Expr, FromTable, Ident, InTarget,
    Insert, JoinConstraint, JoinOperator, LockType, Merge, MergeAction, MergeClauseKind, MergeUpdateKind, ObjectName,
    ObjectNamePart, OnConflictAction, OnInsert, Query, Select, SetExpr, Statement, TableFactor, TableObject,
    TableWithJoins, Update, UpdateTableFromKind, UtilityOption, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::fast::unparsed;
use super::functions::is_read_safe;
use super::keys::{array_keys, describe, key_source};
use super::names::{TableKind, classify, display, ident_is, norm, table_parts};
use super::{Analysis, Class, KeySource, Targeting};
use crate::lex::{Lexer, Token};
use crate::topology::Topology;

/// Parse and analyze one DML statement.
pub(super) fn analyze_dml(sql: &str, topo: &Topology) -> Analysis {
    match parse(sql) {
        Ok(stmt) => analyze_statement(&stmt, topo),
        Err(e) => unparsed(&e),
    }
}

/// Parse exactly one statement. sqlparser does not know `FOR NO KEY
/// UPDATE` and `FOR KEY SHARE`; for routing they are `FOR UPDATE` and `FOR
/// SHARE`, so a statement using them is parsed again without the `NO KEY` /
/// `KEY` words (the text sent to the server is never changed).
fn parse(sql: &str) -> Result<Statement, String> {
    match parse_one(sql) {
        Ok(s) => Ok(s),
        Err(e) => match weaker_locks_as_strong(sql) {
            Some(patched) => parse_one(&patched).map_err(|_| e),
            None => Err(e),
        },
    }
}

fn parse_one(sql: &str) -> Result<Statement, String> {
    let parsed = Parser::new(&PostgreSqlDialect {}).try_with_sql(sql).and_then(|mut p| p.parse_statements());
    let mut stmts = parsed.map_err(|e| {
        let msg = e.to_string();
        let msg = msg.strip_prefix("sql parser error: ").unwrap_or(&msg);
        let mut end = msg.len().min(100);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        format!("does not parse: {}", &msg[..end])
    })?;
    match (stmts.pop(), stmts.is_empty()) {
        (Some(s), true) => Ok(s),
        (None, _) => Err("empty statement".to_owned()),
        (Some(_), false) => Err("several statements".to_owned()),
    }
}

/// `sql` with the `NO KEY` of `FOR NO KEY UPDATE` and the `KEY` of `FOR KEY
/// SHARE` blanked out, if it has any.
fn weaker_locks_as_strong(sql: &str) -> Option<String> {
    let toks: Vec<(usize, Token<'_>)> = std::iter::from_fn({
        let mut lx = Lexer::new(sql);
        move || lx.next_token()
    })
    .collect();
    let mut out: Option<Vec<u8>> = None;
    for i in 0..toks.len() {
        let is = |j: usize, k: &str| toks.get(i + j).is_some_and(|(_, t)| t.is_keyword(k));
        let blank = if is(0, "FOR") && is(1, "NO") && is(2, "KEY") && is(3, "UPDATE") {
            2
        } else if is(0, "FOR") && is(1, "KEY") && is(2, "SHARE") {
            1
        } else {
            continue;
        };
        let bytes = out.get_or_insert_with(|| sql.as_bytes().to_vec());
        for (at, t) in &toks[i + 1..i + 1 + blank] {
            if let Token::Word(word) = t {
                bytes[*at..*at + word.len()].fill(b' ');
            }
        }
    }
    // Only ASCII letters were replaced by spaces: still UTF-8.
    out.and_then(|b| String::from_utf8(b).ok())
}

pub(super) fn analyze_statement(stmt: &Statement, topo: &Topology) -> Analysis {
    match stmt {
        Statement::Explain { analyze, options, statement, .. } => {
            let runs = *analyze || options.iter().flatten().any(option_is_analyze);
            if !is_dml(statement) {
                let class = if runs { Class::Write } else { Class::Read };
                let reason = "EXPLAIN of a non-DML statement".to_owned();
                return Analysis { class, replica_safe: false, targeting: Targeting::Unsharded, reason };
            }
            let inner = walk(statement, topo);
            if runs {
                Analysis { reason: format!("EXPLAIN ANALYZE {}", inner.reason), ..inner }
            } else {
                // Nothing runs; a write's plan is still asked of the primary.
                Analysis { class: Class::Read, reason: format!("EXPLAIN {}", inner.reason), ..inner }
            }
        }
        s if is_dml(s) => walk(s, topo),
        _ => unparsed("not a DML statement"),
    }
}

fn is_dml(s: &Statement) -> bool {
    matches!(
        s,
        Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) | Statement::Merge(_)
    )
}

/// `ANALYZE`, `ANALYZE true`, `ANALYZE on` among EXPLAIN's options.
fn option_is_analyze(o: &UtilityOption) -> bool {
    if !ident_is(&o.name, "analyze") {
        return false;
    }
    let off = |s: &str| ["false", "off", "no", "0"].iter().any(|f| s.eq_ignore_ascii_case(f));
    match &o.arg {
        None => true,
        Some(Expr::Value(v)) => match &v.value {
            Value::Boolean(b) => *b,
            Value::Number(n, _) | Value::SingleQuotedString(n) => !off(n),
            _ => true,
        },
        Some(Expr::Identifier(i)) => !off(&i.value),
        Some(_) => true,
    }
}

fn walk(stmt: &Statement, topo: &Topology) -> Analysis {
    let mut w = Walk::new(topo);
    let _ = stmt.visit(&mut w);
    w.finish()
}

fn addr<T>(t: &T) -> usize {
    std::ptr::from_ref(t).addr()
}

/// State of one walk.
struct Walk<'t> {
    topo: &'t Topology,
    /// Whether the outermost statement has been seen.
    started: bool,
    /// Address of the statement's main SELECT (0: none, e.g. a UNION).
    top_select: usize,
    /// Address of the statement's main INSERT/UPDATE/DELETE/MERGE.
    top_dml: usize,
    /// The main query is a UNION/INTERSECT/EXCEPT.
    top_set_op: bool,
    frames: Vec<Frame>,
    scopes: Vec<Scope>,
    nodes: Vec<Node>,
    /// Addresses of queries that are derived tables or CTEs: their rows are
    /// computed where they run, so a keyless fan-out of them is wrong.
    opaque: Vec<usize>,
    /// Why the statement writes (the first or the main reason).
    write: Option<&'static str>,
    /// The first function not known to be read-safe.
    unsafe_call: Option<String>,
    /// The first shape found that cannot be routed.
    unsupported: Option<String>,
    /// The first unsharded (non-catalog) table named.
    plain: Option<String>,
    /// The first unsharded table written.
    plain_target: Option<String>,
    /// The main INSERT into a sharded table: its rule and row keys.
    insert: Option<Result<(usize, Vec<KeySource>), String>>,
    /// Why the main SELECT cannot run keyless over all shards.
    fanout_block: Option<&'static str>,
}

/// One query (SELECT, set operation, VALUES, with its WITH clause).
struct Frame {
    ctes: Vec<String>,
    opaque: bool,
}

/// The tables one SELECT or DML statement names.
struct Scope {
    entries: Vec<Entry>,
    top: bool,
    opaque: bool,
}

/// A FROM item as it can be referred to: by alias, else by table name
/// (and schema).
struct Entry {
    name: String,
    schema: Option<String>,
    node: Option<usize>,
}

/// One occurrence of a sharded table.
struct Node {
    rule: usize,
    table: String,
    /// Scope nesting depth, 1 for the outermost.
    depth: usize,
    top: bool,
    opaque: bool,
    keys: Option<Vec<KeySource>>,
    /// Union-find parent.
    parent: usize,
}

/// Conditions of one scope: `keyed` ones restrict its rows (WHERE, inner
/// join ON), `links` only tie tables together (outer join ON).
#[derive(Default)]
struct Conds<'a> {
    keyed: Vec<&'a Expr>,
    links: Vec<&'a Expr>,
}

fn flatten_and<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            flatten_and(left, out);
            flatten_and(right, out);
        }
        Expr::Nested(inner) => flatten_and(inner, out),
        other => out.push(other),
    }
}

impl<'t> Walk<'t> {
    fn new(topo: &'t Topology) -> Self {
        Walk {
            topo,
            started: false,
            top_select: 0,
            top_dml: 0,
            top_set_op: false,
            frames: Vec::new(),
            scopes: Vec::new(),
            nodes: Vec::new(),
            opaque: Vec::new(),
            write: None,
            unsafe_call: None,
            unsupported: None,
            plain: None,
            plain_target: None,
            insert: None,
            fanout_block: None,
        }
    }

    fn fail(&mut self, msg: impl FnOnce() -> String) {
        if self.unsupported.is_none() {
            self.unsupported = Some(msg());
        }
    }

    fn note_main(&mut self, st: &Statement) {
        match st {
            Statement::Query(q) => {
                let mut body = &*q.body;
                while let SetExpr::Query(inner) = body {
                    body = &inner.body;
                }
                match body {
                    SetExpr::Select(s) => self.top_select = addr(&**s),
                    SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
                        self.top_dml = addr(s)
                    }
                    SetExpr::SetOperation { .. } => self.top_set_op = true,
                    _ => {}
                }
            }
            other => self.top_dml = addr(other),
        }
    }

    fn note_write(&mut self, top: bool, verb: &'static str) {
        if top {
            self.write = Some(verb);
        } else {
            self.write.get_or_insert("data-modifying WITH");
        }
    }

    fn push_scope(&mut self, top: bool) {
        let opaque = self.frames.last().is_some_and(|f| f.opaque);
        self.scopes.push(Scope { entries: Vec::new(), top, opaque });
    }

    fn add_entry(&mut self, name: String, schema: Option<String>, node: Option<usize>) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.entries.push(Entry { name, schema, node });
        }
    }

    fn add_alias(&mut self, alias: Option<&Ident>) {
        if let Some(a) = alias {
            self.add_entry(norm(a), None, None);
        }
    }

    /// Register a table named in FROM (or written): returns its node when
    /// it is sharded, or its name when it is an unsharded table.
    fn register_table(&mut self, name: &ObjectName, alias: Option<&Ident>) -> (Option<usize>, Option<String>) {
        let Some((schema, table)) = table_parts(name) else {
            self.add_alias(alias);
            return (None, None);
        };
        let entry_name = alias.map(norm);
        let is_cte = schema.is_none() && self.frames.iter().rev().any(|f| f.ctes.contains(&table));
        let kind = if is_cte { TableKind::Catalog } else { classify(self.topo, schema.as_deref(), &table) };
        let (node, plain) = match kind {
            TableKind::Sharded(rule) => {
                let idx = self.nodes.len();
                let (top, opaque) = self.scopes.last().map_or((false, false), |s| (s.top, s.opaque));
                let shown = display(schema.as_deref(), &table);
                self.nodes.push(Node {
                    rule,
                    table: shown,
                    depth: self.scopes.len(),
                    top,
                    opaque,
                    keys: None,
                    parent: idx,
                });
                (Some(idx), None)
            }
            TableKind::Catalog => (None, None),
            TableKind::Plain => {
                let shown = display(schema.as_deref(), &table);
                if self.plain.is_none() {
                    self.plain = Some(shown.clone());
                }
                (None, Some(shown))
            }
        };
        match entry_name {
            Some(a) => self.add_entry(a, None, node),
            None => self.add_entry(table, schema, node),
        }
        (node, plain)
    }

    fn register<'a>(&mut self, twj: &'a TableWithJoins, c: &mut Conds<'a>, nested: bool) {
        self.register_factor(&twj.relation, c);
        for j in &twj.joins {
            let before = self.scopes.last().map_or(0, |s| s.entries.len());
            self.register_factor(&j.relation, c);
            let (constraint, inner) = match &j.join_operator {
                JoinOperator::Join(c) | JoinOperator::Inner(c) | JoinOperator::CrossJoin(c) => (c, true),
                JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::Semi(c)
                | JoinOperator::LeftSemi(c)
                | JoinOperator::RightSemi(c)
                | JoinOperator::Anti(c)
                | JoinOperator::LeftAnti(c)
                | JoinOperator::RightAnti(c)
                | JoinOperator::StraightJoin(c) => (c, false),
                JoinOperator::AsOf { constraint, .. } => (constraint, false),
                _ => continue,
            };
            match constraint {
                // Inside a parenthesised join the whole may be the nullable
                // side of an outer join: its conditions only link.
                JoinConstraint::On(e) => flatten_and(e, if inner && !nested { &mut c.keyed } else { &mut c.links }),
                JoinConstraint::Using(cols) | JoinConstraint::UsingAlias(cols, _) => self.link_using(cols, before),
                JoinConstraint::Natural | JoinConstraint::None => {}
            }
        }
    }

    fn register_factor<'a>(&mut self, tf: &'a TableFactor, c: &mut Conds<'a>) -> (Option<usize>, Option<String>) {
        match tf {
            TableFactor::Table { name, alias, args: None, .. } => {
                return self.register_table(name, alias.as_ref().map(|a| &a.name));
            }
            TableFactor::Derived { subquery, alias, .. } => {
                self.opaque.push(addr(&**subquery));
                self.add_alias(alias.as_ref().map(|a| &a.name));
            }
            TableFactor::NestedJoin { table_with_joins, alias } => {
                self.register(table_with_joins, c, true);
                self.add_alias(alias.as_ref().map(|a| &a.name));
            }
            TableFactor::Table { alias, .. }
            | TableFactor::Function { alias, .. }
            | TableFactor::TableFunction { alias, .. }
            | TableFactor::UNNEST { alias, .. }
            | TableFactor::JsonTable { alias, .. } => self.add_alias(alias.as_ref().map(|a| &a.name)),
            _ => {}
        }
        (None, None)
    }

    /// The table a DML statement writes.
    fn register_target(&mut self, tf: &TableFactor) -> Option<usize> {
        let mut c = Conds::default();
        let (node, plain) = self.register_factor(tf, &mut c);
        if let Some(p) = plain {
            self.plain_target.get_or_insert(p);
        }
        node
    }

    /// `JOIN ... USING (k)`: the joined table's key meets the same column of
    /// the tables before it.
    fn link_using(&mut self, cols: &[ObjectName], before: usize) {
        let Some(scope) = self.scopes.last() else { return };
        let mut pairs = Vec::new();
        for col in cols {
            let Some(ObjectNamePart::Identifier(col)) = col.0.last() else { continue };
            let keyed_on = |e: &Entry| e.node.filter(|n| ident_is(col, &self.topo.tables[self.nodes[*n].rule].column));
            let right: Vec<usize> = scope.entries[before..].iter().filter_map(keyed_on).collect();
            for l in scope.entries[..before].iter().filter_map(keyed_on) {
                pairs.extend(right.iter().map(|r| (l, *r)));
            }
        }
        for (l, r) in pairs {
            self.union(l, r);
        }
    }

    fn apply(&mut self, c: &Conds<'_>) {
        for e in &c.keyed {
            self.conjunct(e, true);
        }
        for e in &c.links {
            self.conjunct(e, false);
        }
    }

    fn conjunct(&mut self, e: &Expr, keyed: bool) {
        if let Expr::BinaryOp { left, op: BinaryOperator::Eq, right } | Expr::IsNotDistinctFrom(left, right) = e
            && let (Some(l), Some(r)) = (self.resolve(left), self.resolve(right))
        {
            self.union(l.0, r.0);
            return;
        }
        if keyed && let Some((n, keys)) = self.keys_of(e) {
            let node = &mut self.nodes[n];
            if node.keys.is_none() {
                node.keys = Some(keys);
            }
        }
    }

    /// The keys a condition pins a node of the current scope to:
    /// `k = c`, `k IN (c, ...)`, `k = ANY(...)`, and ORs of those on one
    /// node (`k = 1 OR k = 2`).
    fn keys_of(&self, e: &Expr) -> Option<(usize, Vec<KeySource>)> {
        match e {
            Expr::Nested(inner) => self.keys_of(inner),
            Expr::BinaryOp { left, op: BinaryOperator::Or, right } => {
                let (a, mut keys) = self.keys_of(left)?;
                let (b, more) = self.keys_of(right)?;
                if a != b {
                    return None;
                }
                for k in more {
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
                Some((a, keys))
            }
            Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
                self.keys_of(left).or_else(|| self.keys_of(right))
            }
            Expr::BinaryOp { left, op: BinaryOperator::Eq, right } | Expr::IsNotDistinctFrom(left, right) => {
                if let Some(n) = self.local_key(left) {
                    Some((n, vec![key_source(right)?]))
                } else {
                    Some((self.local_key(right)?, vec![key_source(left)?]))
                }
            }
            Expr::In { expr, target: InTarget::List(list), negated: false, .. } if !list.is_empty() => {
                let n = self.local_key(expr)?;
                Some((n, list.iter().map(key_source).collect::<Option<Vec<_>>>()?))
            }
            Expr::AnyOp { left, compare_op: BinaryOperator::Eq, right, .. } => {
                Some((self.local_key(left)?, array_keys(right)?))
            }
            _ => None,
        }
    }

    /// A key column of a node in the current scope.
    fn local_key(&self, e: &Expr) -> Option<usize> {
        self.resolve(e).filter(|(_, local)| *local).map(|(n, _)| n)
    }

    /// The node whose key column `e` names, and whether it is in the
    /// current scope. A bare column is looked up in the current scope only
    /// (an outer one could be shadowed by a table whose columns we do not
    /// know); a qualified one in the innermost scope naming the qualifier.
    fn resolve(&self, e: &Expr) -> Option<(usize, bool)> {
        let key_col = |n: usize, col: &Ident| ident_is(col, &self.topo.tables[self.nodes[n].rule].column);
        match e {
            Expr::Nested(inner) => self.resolve(inner),
            Expr::Identifier(col) => {
                let scope = self.scopes.last()?;
                let mut found = None;
                for n in scope.entries.iter().filter_map(|en| en.node) {
                    if key_col(n, col) {
                        // Two tables with the column: ambiguous, unless
                        // joined on it (`JOIN ... USING (k)` merges them).
                        match found {
                            Some(f) if self.root(f) != self.root(n) => return None,
                            Some(_) => {}
                            None => found = Some(n),
                        }
                    }
                }
                found.map(|n| (n, true))
            }
            Expr::CompoundIdentifier(parts) => {
                let (schema, qual, col) = match parts.as_slice() {
                    [q, c] => (None, q, c),
                    [s, q, c] => (Some(s), q, c),
                    _ => return None,
                };
                let depth = self.scopes.len();
                for (d, scope) in self.scopes.iter().enumerate().rev() {
                    let hit = scope.entries.iter().find(|en| {
                        ident_is(qual, &en.name)
                            && schema.is_none_or(|s| en.schema.as_deref().is_some_and(|es| ident_is(s, es)))
                    });
                    if let Some(en) = hit {
                        let n = en.node?;
                        return key_col(n, col).then_some((n, d + 1 == depth));
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn root(&self, mut n: usize) -> usize {
        while self.nodes[n].parent != n {
            n = self.nodes[n].parent;
        }
        n
    }

    fn find(&mut self, mut n: usize) -> usize {
        while self.nodes[n].parent != n {
            let p = self.nodes[n].parent;
            self.nodes[n].parent = self.nodes[p].parent;
            n = p;
        }
        n
    }

    /// Two key columns are equal: their rows meet on one shard, provided
    /// both tables are sharded alike.
    fn union(&mut self, a: usize, b: usize) {
        if !self.compatible(self.nodes[a].rule, self.nodes[b].rule) {
            return;
        }
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.nodes[ra.max(rb)].parent = ra.min(rb);
        }
    }

    fn compatible(&self, a: usize, b: usize) -> bool {
        let (a, b) = (&self.topo.tables[a], &self.topo.tables[b]);
        a.key_type == b.key_type && a.map == b.map
    }

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

    fn enter_update(&mut self, u: &Update, top: bool) {
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

    fn enter_delete(&mut self, d: &Delete, top: bool) {
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

    fn enter_insert(&mut self, i: &Insert, top: bool) {
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

    fn enter_merge(&mut self, m: &Merge, top: bool) {
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

    fn finish(mut self) -> Analysis {
        let targeting = self.targeting();
        let class = if self.write.is_some() { Class::Write } else { Class::Read };
        let replica_safe = class == Class::Read && self.unsafe_call.is_none();
        let target = self.describe(&targeting);
        let reason = match (self.write, &self.unsafe_call) {
            (Some(w), _) => format!("{w}; {target}"),
            (None, Some(f)) => format!("calls {f}(); {target}"),
            (None, None) => format!("read; {target}"),
        };
        Analysis { class, replica_safe, targeting, reason }
    }

    fn describe(&self, t: &Targeting) -> String {
        let rule = |r: usize| &self.topo.tables[r];
        match t {
            Targeting::Unsharded => "unsharded".to_owned(),
            Targeting::Keyed { rule: r, keys } => format!("key {}", describe(&rule(*r).column, keys)),
            Targeting::InsertRows { rule: r, rows } if rows.len() == 1 => {
                format!("key {}", describe(&rule(*r).column, rows))
            }
            Targeting::InsertRows { rule: r, rows } => format!("{} rows by {}", rows.len(), rule(*r).column),
            Targeting::AllShards { rule: r } => {
                format!("all shards of {}", display(rule(*r).schema.as_deref(), &rule(*r).table))
            }
            Targeting::Unsupported(m) => m.clone(),
        }
    }

    fn targeting(&mut self) -> Targeting {
        if let Some(m) = self.unsupported.take() {
            return Targeting::Unsupported(m);
        }
        let Some(first) = self.nodes.first() else { return Targeting::Unsharded };
        if let Some(t) = &self.plain_target {
            return Targeting::Unsupported(format!(
                "write to unsharded table {t} reading sharded table {}",
                first.table
            ));
        }
        if let Some(p) = &self.plain {
            return Targeting::Unsupported(format!(
                "join of sharded table {} with unsharded table {p} across shards",
                first.table
            ));
        }
        if let Some(insert) = self.insert.take() {
            return match insert {
                Ok((rule, rows)) if self.nodes.len() == 1 => Targeting::InsertRows { rule, rows },
                Ok(_) => Targeting::Unsupported(format!(
                    "INSERT into sharded table {} with a subquery on sharded table {}",
                    self.nodes[0].table, self.nodes[1].table
                )),
                Err(m) => Targeting::Unsupported(m),
            };
        }
        let comps = self.components();
        if comps.iter().all(|c| c.keyed.is_some()) {
            let keyed = |c: &Component| c.keyed.and_then(|n| self.nodes[n].keys.as_ref().map(|k| (n, k)));
            let Some((n0, keys)) = keyed(&comps[0]) else { return Targeting::Unsharded };
            for c in &comps[1..] {
                match keyed(c) {
                    Some((n, k)) if k == keys && self.compatible(self.nodes[n].rule, self.nodes[n0].rule) => {}
                    _ => {
                        return Targeting::Unsupported(format!(
                            "sharded tables {} and {} with different shard keys",
                            self.nodes[n0].table, self.nodes[c.first].table
                        ));
                    }
                }
            }
            return Targeting::Keyed { rule: self.nodes[n0].rule, keys: keys.clone() };
        }
        let Some(keyless) = comps.iter().find(|c| c.keyed.is_none()) else { return Targeting::Unsharded };
        if let Some(other) = comps.iter().find(|c| c.root != keyless.root) {
            let (a, b) = (keyless.first.min(other.first), keyless.first.max(other.first));
            let (a, b) = (&self.nodes[a].table, &self.nodes[b].table);
            return Targeting::Unsupported(if self.top_set_op {
                format!("set operation over sharded tables {a} and {b} without a shard key")
            } else {
                format!("join of sharded tables {a} and {b} without a shard key")
            });
        }
        let table = &self.nodes[keyless.first].table;
        let Some(top) = keyless.top.filter(|_| !keyless.opaque) else {
            return Targeting::Unsupported(if self.top_set_op {
                format!("set operation over all shards of {table}")
            } else {
                format!("subquery on sharded table {table} without a shard key")
            });
        };
        if let Some(why) = self.fanout_block {
            return Targeting::Unsupported(why.to_owned());
        }
        Targeting::AllShards { rule: self.nodes[top].rule }
    }

    fn components(&mut self) -> Vec<Component> {
        let mut comps: Vec<Component> = Vec::new();
        for n in 0..self.nodes.len() {
            let root = self.find(n);
            let node = &self.nodes[n];
            let i = match comps.iter().position(|c| c.root == root) {
                Some(i) => i,
                None => {
                    comps.push(Component { root, first: n, depth: usize::MAX, keyed: None, top: None, opaque: false });
                    comps.len() - 1
                }
            };
            let c = &mut comps[i];
            c.opaque |= node.opaque;
            if node.top && c.top.is_none() {
                c.top = Some(n);
            }
            if node.depth < c.depth {
                c.depth = node.depth;
                c.keyed = None;
            }
            if node.depth == c.depth && c.keyed.is_none() && node.keys.is_some() {
                c.keyed = Some(n);
            }
        }
        comps
    }
}

/// Sharded tables whose rows meet on one shard.
struct Component {
    root: usize,
    /// The first node, for messages.
    first: usize,
    /// The outermost scope depth of its nodes.
    depth: usize,
    /// The first node at that depth with keys.
    keyed: Option<usize>,
    /// A node in the main SELECT or written table.
    top: Option<usize>,
    /// A node in a derived table or CTE.
    opaque: bool,
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

impl Visitor for Walk<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, st: &Statement) -> ControlFlow<()> {
        let top = if self.started {
            addr(st) == self.top_dml
        } else {
            self.started = true;
            self.note_main(st);
            true
        };
        match st {
            Statement::Insert(i) => self.enter_insert(i, top),
            Statement::Update(u) => self.enter_update(u, top),
            Statement::Delete(d) => self.enter_delete(d, top),
            Statement::Merge(m) => self.enter_merge(m, top),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, st: &Statement) -> ControlFlow<()> {
        if matches!(st, Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) | Statement::Merge(_)) {
            self.scopes.pop();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let opaque = self.frames.last().is_some_and(|f| f.opaque) || self.opaque.contains(&addr(q));
        let mut ctes = Vec::new();
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                ctes.push(norm(&cte.alias.name));
                self.opaque.push(addr(&*cte.query));
            }
        }
        if let Some(lock) = q.locks.first() {
            self.write.get_or_insert(match lock.lock_type {
                LockType::Update => "SELECT ... FOR UPDATE",
                LockType::Share => "SELECT ... FOR SHARE",
            });
        }
        self.frames.push(Frame { ctes, opaque });
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.frames.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        let top = addr(s) == self.top_select;
        if s.into.is_some() {
            self.write.get_or_insert("SELECT INTO");
        }
        if top {
            match &s.distinct {
                Some(Distinct::Distinct) => self.fanout_block = Some("DISTINCT over all shards"),
                Some(Distinct::On(_)) => self.fanout_block = Some("DISTINCT ON over all shards"),
                _ => {}
            }
        }
        self.push_scope(top);
        let mut c = Conds::default();
        for twj in &s.from {
            self.register(twj, &mut c, false);
        }
        if let Some(w) = &s.selection {
            flatten_and(w, &mut c.keyed);
        }
        self.apply(&c);
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, _s: &Select) -> ControlFlow<()> {
        self.scopes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, args: Some(_), .. } | TableFactor::Function { name, .. } = tf {
            self.check_call(name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            self.check_call(&f.name);
            if f.over.is_some() && self.scopes.last().is_some_and(|s| s.top) {
                self.fanout_block.get_or_insert("window function over all shards");
            }
        }
        ControlFlow::Continue(())
    }
}

impl Walk<'_> {
    fn check_call(&mut self, name: &ObjectName) {
        if self.unsafe_call.is_none() && !is_read_safe(name) {
            let mut shown = String::new();
            for (i, part) in name.0.iter().enumerate() {
                if i > 0 {
                    shown.push('.');
                }
                match part {
                    ObjectNamePart::Identifier(id) => shown.push_str(&norm(id)),
                    ObjectNamePart::Function(f) => shown.push_str(&norm(&f.name)),
                }
            }
            self.unsafe_call = Some(shown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weaker_locks_are_blanked() {
        assert_eq!(
            weaker_locks_as_strong("SELECT 1 FROM t FOR NO KEY UPDATE").as_deref(),
            Some("SELECT 1 FROM t FOR        UPDATE")
        );
        assert_eq!(
            weaker_locks_as_strong("select 'for key share' from t for key share of t").as_deref(),
            Some("select 'for key share' from t for     share of t")
        );
        assert_eq!(weaker_locks_as_strong("TABLE t FOR KEY SHARE").as_deref(), Some("TABLE t FOR     SHARE"));
        assert_eq!(weaker_locks_as_strong("SELECT 'FOR NO KEY UPDATE'"), None);
    }

    #[test]
    fn parse_errors_are_short() {
        let e = parse("SELECT FROM WHERE (").unwrap_err();
        assert!(e.starts_with("does not parse: "), "{e}");
        assert!(e.len() < 120, "{e}");
        assert_eq!(parse("SELECT 1; SELECT 2").unwrap_err(), "several statements");
        assert!(parse("SELECT 1;").is_ok());
    }

    #[test]
    fn explain_options() {
        let opt = |sql: &str| match parse(sql).unwrap() {
            Statement::Explain { options: Some(o), .. } => o.iter().any(option_is_analyze),
            _ => panic!("{sql}"),
        };
        assert!(opt("EXPLAIN (ANALYZE) SELECT 1"));
        assert!(opt("EXPLAIN (ANALYZE true, BUFFERS) SELECT 1"));
        assert!(opt("EXPLAIN (analyze on) SELECT 1"));
        assert!(!opt("EXPLAIN (ANALYZE false) SELECT 1"));
        assert!(!opt("EXPLAIN (ANALYZE off) SELECT 1"));
        assert!(!opt("EXPLAIN (FORMAT JSON) SELECT 1"));
    }
}

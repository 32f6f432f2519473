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
//! subquery, and `o.owner_id IN (SELECT p.owner_id ...)`) put nodes into
//! one *component*: rows that can only meet on one shard.
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

mod dml;
mod target;

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Distinct, Expr, Ident, InTarget, JoinConstraint, JoinOperator, LockType, ObjectName,
    ObjectNamePart, Query, Select, SelectItem, SetExpr, Statement, TableFactor, TableWithJoins, UtilityOption, Value,
    Visit, Visitor,
};

use super::fast::unparsed;
use super::functions::is_read_safe;
use super::keys::{array_keys, key_source};
use super::names::{TableKind, classify, display, ident_is, norm, table_parts};
use super::parse::parse;
use super::{Analysis, Class, KeySource, Targeting};
use crate::topology::Topology;

/// Parse and analyze one DML statement.
pub(super) fn analyze_dml(sql: &str, topo: &Topology) -> Analysis {
    match parse(sql) {
        Ok(stmt) => analyze_statement(&stmt, topo),
        Err(e) => unparsed(&e),
    }
}

fn analyze_statement(stmt: &Statement, topo: &Topology) -> Analysis {
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
    /// A view of one server's own state (`pg_stat_activity`,
    /// `pg_stat_wal_receiver`, `pg_locks`...): a replica would describe
    /// itself, not the primary.
    server_state: Option<String>,
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
    /// `k IN (SELECT k2 FROM ...)`: the node of `k` and the address of the
    /// subquery's SELECT, whose output column is resolved when it is walked.
    semijoins: Vec<(usize, usize)>,
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
            server_state: None,
            unsupported: None,
            plain: None,
            plain_target: None,
            insert: None,
            fanout_block: None,
            semijoins: Vec::new(),
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
        if !is_cte && kind == TableKind::Catalog && self.server_state.is_none() && is_server_state(&table) {
            self.server_state = Some(table.clone());
        }
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
        // `k IN (SELECT k2 ...)` as a conjunct: a row only needs subquery
        // rows with its own key (NOT IN is left out: one NULL anywhere
        // changes every answer).
        let semijoin = match e {
            Expr::In { expr, target: InTarget::Subquery(q), negated: false, .. } => Some((expr, q)),
            Expr::AnyOp { left, compare_op: BinaryOperator::Eq, right, .. } => match &**right {
                Expr::Subquery(q) => Some((left, q)),
                _ => None,
            },
            _ => None,
        };
        if let Some((col, q)) = semijoin
            && let SetExpr::Select(sub) = &*q.body
            && let Some((n, _)) = self.resolve(col)
        {
            self.semijoins.push((n, addr(&**sub)));
            return;
        }
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
            // Plain DISTINCT merges (the fan-out dedups); DISTINCT ON keeps
            // one row per group chosen by ORDER BY on each shard: it does not.
            if let Some(Distinct::On(_)) = &s.distinct {
                self.fanout_block = Some("DISTINCT ON over all shards");
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
        if let Some(i) = self.semijoins.iter().position(|(_, sub)| *sub == addr(s)) {
            let (outer, _) = self.semijoins.swap_remove(i);
            if let [SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }] = s.projection.as_slice()
                && let Some(inner) = self.local_key(e)
            {
                self.union(outer, inner);
            }
        }
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

/// System views whose rows describe the server that answers (its
/// sessions, locks, replication, statistics counters) rather than data.
fn is_server_state(table: &str) -> bool {
    table.starts_with("pg_stat_")
        || table.starts_with("pg_statio_")
        || matches!(
            table,
            "pg_locks"
                | "pg_replication_slots"
                | "pg_prepared_xacts"
                | "pg_backend_memory_contexts"
                | "pg_replication_origin_status"
                | "pg_shmem_allocations"
        )
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
    use crate::analyze::parse::parse;

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

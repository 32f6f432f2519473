//! From the nodes and their components to the statement's targeting, and
//! the reason shown by EXPLAIN ROUTE.

use super::Walk;
use crate::analyze::keys::describe;
use crate::analyze::names::display;
use crate::analyze::{Analysis, Class, Targeting};

impl Walk<'_> {
    /// The analysis once the whole tree has been walked: a write if
    /// anything wrote or locked, replica-safe only for a read calling no
    /// unknown function, and the reason as `cause; target`.
    pub(super) fn finish(mut self) -> Analysis {
        let targeting = self.targeting();
        let class = if self.write.is_some() { Class::Write } else { Class::Read };
        let replica_safe = class == Class::Read && self.unsafe_call.is_none() && self.server_state.is_none();
        let target = self.describe(&targeting);
        let reason = match (self.write, &self.unsafe_call, &self.server_state) {
            (Some(w), _, _) => format!("{w}; {target}"),
            (None, Some(f), _) => format!("calls {f}(); {target}"),
            (None, None, Some(v)) => format!("reads the server's own state ({v}); {target}"),
            (None, None, None) => format!("read; {target}"),
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

    /// Unsupported shapes first, then tables living on one shard only,
    /// then INSERT rows, then the components (see the module doc of `walk`).
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

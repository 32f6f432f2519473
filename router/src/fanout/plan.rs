//! From the client's SQL to `shard_sql` and the merge spec.
//!
//! sqlparser says what the statement means; [`layout`] says where its parts
//! are in the text. The shard statement is the client's text with hidden
//! select-list items appended (`, expr AS "__meridian_N"`) and the
//! LIMIT/OFFSET/FETCH tail replaced, so nothing the client wrote is
//! re-printed (and `$n` parameters stay as they were).
//!
//! Name resolution follows PostgreSQL's (parse_clause.c): an `ORDER BY`
//! bare name means an output column (alias or derived name, as
//! `FigureColname` derives it) before an input column; an integer constant
//! is a position; anything else is an expression over the input. A
//! `GROUP BY` bare name means an input column before an output alias, which
//! Meridian cannot tell apart without the schema, so a GROUP BY name that
//! is also a select-list alias of some other expression is refused.

use std::ops::{ControlFlow, Range};

use sqlparser::ast::{
    Distinct, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, LimitClause,
    ObjectName, ObjectNamePart, OrderByExpr, OrderByKind, OrderBySort, Query, Select, SelectFlavor, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, UnaryOperator, Value, Visit, Visitor,
    WildcardAdditionalOptions, visit_expressions,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::functions::{builtin_name, check_plain, has_aggregate, norm};
use super::layout::{self, Layout};
use super::{AggCol, ColRef, Collation, FanoutPlan, Mode, Role, SortKey, Spec, Unsupported};

/// Aliases of hidden columns start with this; client SQL may not use it.
const HIDDEN_PREFIX: &str = "__meridian_";

fn unsupported(msg: impl Into<String>) -> Unsupported {
    Unsupported(msg.into())
}

fn not_located() -> Unsupported {
    unsupported("could not match the statement's text to its parts")
}

pub(super) fn plan(sql: &str) -> Result<FanoutPlan, Unsupported> {
    if sql.to_ascii_lowercase().contains(HIDDEN_PREFIX) {
        return Err(unsupported(format!("names starting with {HIDDEN_PREFIX} are reserved for Meridian")));
    }
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| unsupported(format!("the statement does not parse: {e}")))?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err(unsupported("only a single SELECT can run on every shard"));
    };
    check_windows(&statements[0])?;
    let select = check_query(query)?;
    check_select(select)?;
    let layout = layout::scan(sql).ok_or_else(not_located)?;
    Planner::new(sql, select, layout).plan(query)
}

/// Window functions anywhere (an `OVER` or a `WINDOW` clause).
fn check_windows(statement: &Statement) -> Result<(), Unsupported> {
    let found = visit_expressions(statement, |e| match e {
        Expr::Function(f) if f.over.is_some() => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    if found.is_break() {
        return Err(unsupported("window functions are not supported"));
    }
    Ok(())
}

/// Counts every query node, the top-level one included.
struct QueryCounter(usize);

impl Visitor for QueryCounter {
    type Break = ();
    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.0 += 1;
        ControlFlow::Continue(())
    }
}

fn check_query(q: &Query) -> Result<&Select, Unsupported> {
    if q.with.is_some() {
        return Err(unsupported("WITH (common table expressions) is not supported"));
    }
    let select = match q.body.as_ref() {
        SetExpr::Select(select) => select,
        SetExpr::SetOperation { op, .. } => {
            return Err(unsupported(format!("set operations ({op}) are not supported")));
        }
        SetExpr::Values(_) => return Err(unsupported("VALUES is not supported")),
        SetExpr::Query(_) => return Err(unsupported("a parenthesized SELECT is not supported")),
        _ => return Err(unsupported("this kind of query is not supported")),
    };
    if !q.locks.is_empty() {
        return Err(unsupported("SELECT ... FOR UPDATE/SHARE is not supported"));
    }
    if q.for_clause.is_some() || q.settings.is_some() || q.format_clause.is_some() || !q.pipe_operators.is_empty() {
        return Err(unsupported("this kind of query is not supported"));
    }
    let mut counter = QueryCounter(0);
    let _ = q.visit(&mut counter);
    if counter.0 > 1 {
        return Err(unsupported("subqueries are not supported"));
    }
    Ok(select)
}

fn check_select(s: &Select) -> Result<(), Unsupported> {
    if matches!(s.distinct, Some(Distinct::On(_))) {
        return Err(unsupported("DISTINCT ON is not supported"));
    }
    if s.into.is_some() {
        return Err(unsupported("SELECT INTO is not supported"));
    }
    if s.having.is_some() {
        return Err(unsupported("HAVING is not supported"));
    }
    if !s.named_window.is_empty() {
        return Err(unsupported("window functions are not supported"));
    }
    if s.top.is_some()
        || !s.lateral_views.is_empty()
        || s.prewhere.is_some()
        || !s.connect_by.is_empty()
        || !s.cluster_by.is_empty()
        || !s.distribute_by.is_empty()
        || !s.sort_by.is_empty()
        || s.qualify.is_some()
        || s.value_table_mode.is_some()
        || s.select_modifiers.is_some()
        || s.exclude.is_some()
        || !s.optimizer_hints.is_empty()
        || !matches!(s.flavor, SelectFlavor::Standard)
    {
        return Err(unsupported("this kind of SELECT is not supported"));
    }
    let table = match s.from.as_slice() {
        [] => return Err(unsupported("a SELECT without FROM reads no sharded table")),
        [one] if one.joins.is_empty() => &one.relation,
        _ => return Err(unsupported("joins are not supported")),
    };
    match table {
        TableFactor::Table { sample: Some(_), .. } => return Err(unsupported("TABLESAMPLE is not supported")),
        TableFactor::Table { args: Some(_), .. } => return Err(unsupported("functions in FROM are not supported")),
        TableFactor::Table {
            version: None,
            with_ordinality: false,
            json_path: None,
            with_hints,
            partitions,
            index_directives,
            ..
        } if with_hints.is_empty() && partitions.is_empty() && index_directives.is_empty() => {}
        _ => return Err(unsupported("only a single plain table in FROM is supported")),
    }
    if let GroupByExpr::Expressions(exprs, modifiers) = &s.group_by {
        let sets = exprs.iter().any(|e| matches!(e, Expr::GroupingSets(_) | Expr::Cube(_) | Expr::Rollup(_)));
        if !modifiers.is_empty() || sets {
            return Err(unsupported("GROUPING SETS, ROLLUP and CUBE are not supported"));
        }
    } else {
        return Err(unsupported("GROUP BY ALL is not supported"));
    }
    Ok(())
}

fn unnest(mut e: &Expr) -> &Expr {
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

fn collation_of(name: &ObjectName) -> Collation {
    match builtin_name(name).as_deref() {
        Some("C" | "POSIX") => Collation::C,
        _ => Collation::Other,
    }
}

/// The collation an expression's top level names, if any.
fn top_collation(e: &Expr) -> Collation {
    match unnest(e) {
        Expr::Collate { collation, .. } => collation_of(collation),
        _ => Collation::Default,
    }
}

/// A position (`ORDER BY 2`, `GROUP BY 1`), or `None` for an expression.
fn position(e: &Expr, clause: &str) -> Result<Option<usize>, Unsupported> {
    match unnest(e) {
        Expr::Value(v) => match &v.value {
            Value::Number(s, _) => match s.parse::<usize>() {
                Ok(k) if k >= 1 => Ok(Some(k)),
                _ => Err(unsupported(format!("{clause} {s} is not a select-list position"))),
            },
            Value::Placeholder(_) => Ok(None),
            _ => Err(unsupported(format!("{clause} a constant is not supported"))),
        },
        // PG folds `-1` into a constant: a (bad) position, not an expression.
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } if matches!(unnest(expr), Expr::Value(_)) => {
            Err(unsupported(format!("{clause} {e} is not a select-list position")))
        }
        _ => Ok(None),
    }
}

/// PG's `FigureColname`, as far as it is sure: the output name of a
/// select-list expression without alias.
#[derive(Debug, Clone, PartialEq)]
enum OutName {
    Known(String),
    /// PG's name depends on things Meridian does not model (type names,
    /// version-specific names of special forms like EXTRACT or TRIM).
    Unknown,
}

enum Figure {
    Name(String),
    /// PG's strength 0: the column is named `?column?`.
    Nothing,
    Unknown,
}

fn figure(e: &Expr) -> Figure {
    match e {
        Expr::Identifier(id) => Figure::Name(norm(id)),
        Expr::CompoundIdentifier(parts) => parts.last().map_or(Figure::Unknown, |p| Figure::Name(norm(p))),
        Expr::Function(f) => match f.name.0.last() {
            Some(ObjectNamePart::Identifier(id)) => Figure::Name(norm(id)),
            _ => Figure::Unknown,
        },
        // A cast is named after its operand when that has a real name, else
        // after the type (as written after PG's grammar: not modelled).
        Expr::Cast { expr, .. } => match figure(expr) {
            Figure::Name(n) => Figure::Name(n),
            _ => Figure::Unknown,
        },
        Expr::Collate { expr, .. } | Expr::Nested(expr) => figure(expr),
        Expr::Value(_)
        | Expr::BinaryOp { .. }
        | Expr::UnaryOp { .. }
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsNotTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsNotFalse(_)
        | Expr::IsUnknown(_)
        | Expr::IsNotUnknown(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..)
        | Expr::In { .. }
        | Expr::Between { .. }
        | Expr::Like { .. }
        | Expr::ILike { .. }
        | Expr::SimilarTo { .. }
        | Expr::AnyOp { .. }
        | Expr::AllOp { .. } => Figure::Nothing,
        _ => Figure::Unknown,
    }
}

fn derived_name(e: &Expr) -> OutName {
    match figure(e) {
        Figure::Name(n) => OutName::Known(n),
        Figure::Nothing => OutName::Known("?column?".into()),
        Figure::Unknown => OutName::Unknown,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggKind {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

#[derive(Debug, Clone)]
struct AggCall {
    kind: AggKind,
    /// The argument's text (`avg` only: its hidden sum and count reuse it).
    arg_text: Option<String>,
    /// The argument's top-level COLLATE (`min`/`max` on text need "C").
    arg_collation: Collation,
}

/// One select-list item.
struct Item<'a> {
    /// `None` for `*` and `t.*`.
    expr: Option<&'a Expr>,
    /// The expression's text without alias.
    text: String,
    alias: Option<String>,
    name: OutName,
    agg: Option<AggCall>,
    role: Option<Role>,
}

impl Item<'_> {
    /// The collation this column sorts under, as far as the SQL says.
    fn collation(&self) -> Collation {
        match (&self.agg, self.expr) {
            (Some(call), _) => call.arg_collation,
            (None, Some(e)) => top_collation(e),
            (None, None) => Collation::Default,
        }
    }
}

/// A select-list item Meridian appends; the client does not see it.
struct HiddenCol<'a> {
    text: String,
    expr: Option<&'a Expr>,
    role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Concat,
    Distinct,
    Aggregate,
}

struct Planner<'a> {
    sql: &'a str,
    select: &'a Select,
    layout: Layout,
    items: Vec<Item<'a>>,
    first_wildcard: Option<usize>,
    hidden: Vec<HiddenCol<'a>>,
    /// What qualifies the FROM table's columns (`t` in `t.x`).
    table_name: Option<String>,
}

impl<'a> Planner<'a> {
    fn new(sql: &'a str, select: &'a Select, layout: Layout) -> Self {
        let table_name = match select.from.first().map(|t| &t.relation) {
            Some(TableFactor::Table { alias: Some(alias), .. }) => Some(norm(&alias.name)),
            Some(TableFactor::Table { name, .. }) => match name.0.last() {
                Some(ObjectNamePart::Identifier(id)) => Some(norm(id)),
                _ => None,
            },
            _ => None,
        };
        Planner { sql, select, layout, items: Vec::new(), first_wildcard: None, hidden: Vec::new(), table_name }
    }

    fn plan(mut self, query: &'a Query) -> Result<FanoutPlan, Unsupported> {
        self.build_items()?;
        let GroupByExpr::Expressions(group_by, _) = &self.select.group_by else {
            return Err(unsupported("GROUP BY ALL is not supported"));
        };
        let order_by: &[OrderByExpr] = match query.order_by.as_ref().map(|o| &o.kind) {
            None => &[],
            Some(OrderByKind::Expressions(exprs)) => exprs,
            Some(OrderByKind::All(_)) => return Err(unsupported("ORDER BY ALL is not supported")),
        };
        if query.order_by.as_ref().is_some_and(|o| o.interpolate.is_some()) {
            return Err(unsupported("this kind of ORDER BY is not supported"));
        }
        // The text and the parse must agree on every part spliced or cut.
        let l = &self.layout;
        if order_by.len() != l.order_by.len()
            || group_by.len() != l.group_by.len()
            || !l.from
            || l.quantifier != self.select.distinct.is_some()
            || match l.tail {
                Some(tail) => {
                    query.limit_clause.is_none()
                        && query.fetch.is_none()
                        && !layout::is_limit_all(self.sql, tail..l.end)
                }
                None => query.limit_clause.is_some() || query.fetch.is_some(),
            }
        {
            return Err(not_located());
        }
        let distinct = matches!(self.select.distinct, Some(Distinct::Distinct));
        let aggregated = self.items.iter().any(|i| i.agg.is_some())
            || !group_by.is_empty()
            || order_by.iter().any(|o| has_aggregate(&o.expr));
        let shape = match (distinct, aggregated) {
            (true, true) => return Err(unsupported("SELECT DISTINCT with aggregates or GROUP BY is not supported")),
            (true, false) => Shape::Distinct,
            (false, true) => Shape::Aggregate,
            (false, false) => Shape::Concat,
        };
        if shape == Shape::Aggregate && self.first_wildcard.is_some() {
            return Err(unsupported("SELECT * with aggregates or GROUP BY is not supported"));
        }
        let (offset, limit) = limits(query)?;

        if shape == Shape::Aggregate {
            for (g, range) in group_by.iter().zip(self.layout.group_by.clone()) {
                self.group_key(g, &range)?;
            }
            for i in 0..self.items.len() {
                let role = match self.items[i].agg.clone() {
                    Some(call) => self.agg_role(&call)?,
                    None => self.items[i].role.unwrap_or(Role::Carry),
                };
                self.items[i].role = Some(role);
            }
        }
        let mut order = Vec::with_capacity(order_by.len());
        for (ob, range) in order_by.iter().zip(self.layout.order_by.clone()) {
            order.push(self.sort_key(ob, &range, shape)?);
        }

        let mode = match shape {
            Shape::Concat => Mode::Concat,
            Shape::Distinct => Mode::Distinct,
            Shape::Aggregate => {
                let visible = self.items.iter().map(|i| AggCol {
                    role: i.role.unwrap_or(Role::Carry),
                    label: if i.text.is_empty() { "*".into() } else { i.text.clone() },
                });
                let hidden = self.hidden.iter().map(|h| AggCol { role: h.role, label: h.text.clone() });
                Mode::Aggregate { grouped: !group_by.is_empty(), cols: visible.chain(hidden).collect() }
            }
        };
        // Shards can stop after offset + limit rows only when their rows are
        // the client's rows; groups and distinct rows span shards.
        let shard_limit = match shape {
            Shape::Concat => limit.and_then(|n| n.checked_add(offset)).filter(|&n| n <= i64::MAX as u64),
            _ => None,
        };
        let shard_sql = self.shard_sql(shard_limit);
        let spec = Spec { hidden: self.hidden.len(), mode, order, offset, limit };
        Ok(FanoutPlan { shard_sql, spec })
    }

    fn build_items(&mut self) -> Result<(), Unsupported> {
        let projection = &self.select.projection;
        if projection.len() != self.layout.items.len() {
            return Err(not_located());
        }
        for (i, (item, range)) in projection.iter().zip(self.layout.items.clone()).enumerate() {
            let (expr, range, alias) = match item {
                SelectItem::Wildcard(opts) => {
                    check_wildcard(opts)?;
                    self.push_wildcard(i, range);
                    continue;
                }
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(_), opts) => {
                    check_wildcard(opts)?;
                    self.push_wildcard(i, range);
                    continue;
                }
                SelectItem::UnnamedExpr(e) => (e, range, None),
                SelectItem::ExprWithAlias { expr, alias } => {
                    let range = layout::strip_alias(self.sql, &range, &alias.value, alias.quote_style.is_some())
                        .ok_or_else(not_located)?;
                    (expr, range, Some(norm(alias)))
                }
                _ => return Err(unsupported("this select-list form is not supported")),
            };
            let agg = self.agg_call(expr, &range)?;
            let name = match &alias {
                Some(a) => OutName::Known(a.clone()),
                None => derived_name(expr),
            };
            let text = self.sql[range.clone()].to_string();
            self.items.push(Item { expr: Some(expr), text, alias, name, agg, role: None });
        }
        Ok(())
    }

    fn push_wildcard(&mut self, i: usize, range: Range<usize>) {
        self.first_wildcard.get_or_insert(i);
        let text = self.sql[range].to_string();
        self.items.push(Item { expr: None, text, alias: None, name: OutName::Unknown, agg: None, role: None });
    }

    /// A supported aggregate call at the top of `e`, checked; `None` (after
    /// checking `e` as a plain expression) for anything else.
    fn agg_call(&self, e: &Expr, range: &Range<usize>) -> Result<Option<AggCall>, Unsupported> {
        let call = match unnest(e) {
            Expr::Function(f) => f,
            _ => return check_plain(e).map(|()| None),
        };
        let name = builtin_name(&call.name).unwrap_or_default();
        let kind = match name.as_str() {
            "count" => AggKind::Count,
            "sum" => AggKind::Sum,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            "avg" => AggKind::Avg,
            _ => return check_plain(e).map(|()| None),
        };
        if call.over.is_some() {
            return Err(unsupported("window functions are not supported"));
        }
        if call.filter.is_some() {
            return Err(unsupported("FILTER clauses are not supported"));
        }
        if !call.within_group.is_empty() {
            return Err(unsupported("ordered-set aggregates (WITHIN GROUP) are not supported"));
        }
        let FunctionArguments::List(list) = &call.args else {
            return Err(unsupported(format!("{name} without an argument list is not supported")));
        };
        if call.null_treatment.is_some() || !matches!(call.parameters, FunctionArguments::None) {
            return Err(unsupported(format!("this form of {name}() is not supported")));
        }
        if matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct)) {
            return Err(unsupported("aggregates with DISTINCT (such as count(DISTINCT x)) are not supported"));
        }
        if !list.clauses.is_empty() {
            return Err(unsupported("ORDER BY inside an aggregate call is not supported"));
        }
        let arg = match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if kind == AggKind::Count => None,
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(x))] => {
                check_plain(x)?;
                Some(x)
            }
            _ => return Err(unsupported(format!("{name}() with these arguments is not supported"))),
        };
        let arg_text = match kind {
            AggKind::Avg => {
                let args = layout::call_args(self.sql, range).ok_or_else(not_located)?;
                Some(self.sql[args].trim().to_string())
            }
            _ => None,
        };
        Ok(Some(AggCall { kind, arg_text, arg_collation: arg.map_or(Collation::Default, top_collation) }))
    }

    /// The role of an aggregate column; `avg` appends its hidden partners.
    fn agg_role(&mut self, call: &AggCall) -> Result<Role, Unsupported> {
        Ok(match call.kind {
            AggKind::Count => Role::Count,
            AggKind::Sum => Role::Sum,
            AggKind::Min => Role::Min(call.arg_collation),
            AggKind::Max => Role::Max(call.arg_collation),
            AggKind::Avg => {
                let arg = call.arg_text.clone().ok_or_else(not_located)?;
                let sum = self.push_hidden(format!("pg_catalog.sum({arg})"), None, Role::Sum);
                let count = self.push_hidden(format!("pg_catalog.count({arg})"), None, Role::Count);
                Role::Avg { sum: self.absolute(sum), count: self.absolute(count) }
            }
        })
    }

    fn push_hidden(&mut self, text: String, expr: Option<&'a Expr>, role: Role) -> ColRef {
        self.hidden.push(HiddenCol { text, expr, role });
        ColRef::Hidden(self.hidden.len() - 1)
    }

    /// A column's index in the shard result (aggregate shape: no `*`).
    fn absolute(&self, col: ColRef) -> usize {
        match col {
            ColRef::Visible(i) => i,
            ColRef::Hidden(j) => self.items.len() + j,
        }
    }

    /// `e` names the FROM table's column `name` (`name` or `t.name`).
    fn column_name(&self, e: &Expr) -> Option<String> {
        match unnest(e) {
            Expr::Identifier(id) => Some(norm(id)),
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [table, column] if Some(norm(table)) == self.table_name => Some(norm(column)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Do two expressions compute the same value for every row? (Syntactic
    /// equality; spans and parentheses ignored, `t.x` is `x`.)
    fn same_expr(&self, a: &Expr, b: &Expr) -> bool {
        unnest(a) == unnest(b) || self.column_name(a).is_some_and(|x| Some(x) == self.column_name(b))
    }

    fn group_key(&mut self, g: &'a Expr, range: &Range<usize>) -> Result<(), Unsupported> {
        if matches!(g, Expr::Tuple(_)) {
            return Err(unsupported("GROUP BY a parenthesized list is not supported"));
        }
        check_plain(g)?;
        if let Some(k) = position(g, "GROUP BY")? {
            return match self.items.get_mut(k - 1) {
                Some(item) if item.agg.is_none() && item.expr.is_some() => {
                    item.role = Some(Role::Key);
                    Ok(())
                }
                _ => Err(unsupported(format!("GROUP BY {k} does not name a plain select-list column"))),
            };
        }
        if let Expr::Identifier(id) = g {
            let name = norm(id);
            let aliased_other = self.items.iter().any(|it| {
                it.alias.as_deref() == Some(name.as_str())
                    && it.expr.is_none_or(|e| self.column_name(e).as_deref() != Some(name.as_str()))
            });
            if aliased_other {
                return Err(unsupported(format!(
                    "GROUP BY {name} is ambiguous across shards (a select-list alias, or a table column?); \
                     group by the expression or its position instead"
                )));
            }
        }
        if let Some(i) =
            self.items.iter().position(|it| it.agg.is_none() && it.expr.is_some_and(|e| self.same_expr(e, g)))
        {
            self.items[i].role = Some(Role::Key);
            return Ok(());
        }
        if !self.hidden.iter().any(|h| h.role == Role::Key && h.expr.is_some_and(|e| self.same_expr(e, g))) {
            self.push_hidden(self.sql[range.clone()].to_string(), Some(g), Role::Key);
        }
        Ok(())
    }

    fn sort_key(&mut self, ob: &'a OrderByExpr, range: &Range<usize>, shape: Shape) -> Result<SortKey, Unsupported> {
        if ob.with_fill.is_some() {
            return Err(unsupported("this kind of ORDER BY is not supported"));
        }
        let desc = match &ob.options.sort {
            Some(OrderBySort::Using(_)) => return Err(unsupported("ORDER BY ... USING is not supported")),
            Some(OrderBySort::Desc) => true,
            Some(OrderBySort::Asc) | None => false,
        };
        let expr_range = layout::strip_sort_options(self.sql, range);
        let label = self.sql[expr_range.clone()].to_string();
        let (col, collation) = self.sort_column(ob, &expr_range, &label, shape)?;
        Ok(SortKey { col, desc, nulls_first: ob.options.nulls_first.unwrap_or(desc), collation, label })
    }

    /// The result column an ORDER BY item sorts by, and its collation.
    fn sort_column(
        &mut self,
        ob: &'a OrderByExpr,
        expr_range: &Range<usize>,
        label: &str,
        shape: Shape,
    ) -> Result<(ColRef, Collation), Unsupported> {
        let (inner, explicit) = match unnest(&ob.expr) {
            Expr::Collate { expr, collation } => (expr.as_ref(), Some(collation_of(collation))),
            e => (e, None),
        };
        if explicit.is_none() {
            // A position: the k-th output column.
            if let Some(k) = position(&ob.expr, "ORDER BY")? {
                let known = self.first_wildcard.is_none_or(|w| k - 1 < w);
                if self.first_wildcard.is_none() && k > self.items.len() {
                    return Err(unsupported(format!("ORDER BY position {k} is not in the select list")));
                }
                let collation = if known { self.items[k - 1].collation() } else { Collation::Default };
                return Ok((ColRef::Visible(k - 1), collation));
            }
            // A bare name: an output column's name first.
            if let Expr::Identifier(id) = &ob.expr {
                let name = norm(id);
                let hit = self.items.iter().position(|it| it.name == OutName::Known(name.clone()));
                if let Some(i) = hit {
                    return Ok((self.item_column(i, shape)?, self.items[i].collation()));
                }
                if self.items.iter().any(|it| it.expr.is_some() && it.name == OutName::Unknown) {
                    return Err(unsupported(format!(
                        "ORDER BY {label}: cannot tell whether it names a select-list column; \
                         give that column an alias or sort by position"
                    )));
                }
            }
        }
        // An expression over the input: the select-list item computing it.
        if let Some(i) = self.items.iter().position(|it| it.expr.is_some_and(|e| self.same_expr(e, inner))) {
            let collation = explicit.unwrap_or_else(|| self.items[i].collation());
            return Ok((self.item_column(i, shape)?, collation));
        }
        let collation = explicit.unwrap_or(Collation::Default);
        match shape {
            Shape::Distinct => {
                Err(unsupported("with SELECT DISTINCT, ORDER BY expressions must appear in the select list"))
            }
            Shape::Concat => {
                check_plain(&ob.expr)?;
                Ok((self.push_hidden(label.to_string(), Some(&ob.expr), Role::Carry), collation))
            }
            Shape::Aggregate => {
                if let Some(j) = self.hidden.iter().position(|h| h.expr.is_some_and(|e| self.same_expr(e, inner))) {
                    let collation = match self.hidden[j].role {
                        Role::Min(c) | Role::Max(c) => explicit.unwrap_or(c),
                        _ => collation,
                    };
                    return Ok((ColRef::Hidden(j), collation));
                }
                match self.agg_call(&ob.expr, expr_range)? {
                    Some(call) => {
                        // Reserve the column first so that avg's partners follow it.
                        let j = self.hidden.len();
                        let col = self.push_hidden(label.to_string(), Some(&ob.expr), Role::Carry);
                        self.hidden[j].role = self.agg_role(&call)?;
                        Ok((col, call.arg_collation))
                    }
                    None => Ok((self.push_hidden(label.to_string(), Some(&ob.expr), Role::Carry), collation)),
                }
            }
        }
    }

    /// The result column of select-list item `i`. Items after a `*` have no
    /// known position, so a hidden copy stands in for them.
    fn item_column(&mut self, i: usize, shape: Shape) -> Result<ColRef, Unsupported> {
        if self.first_wildcard.is_none_or(|w| i < w) {
            return Ok(ColRef::Visible(i));
        }
        if shape == Shape::Distinct {
            return Err(unsupported("with SELECT DISTINCT *, ORDER BY must use positions for columns after the *"));
        }
        let (text, expr) = (self.items[i].text.clone(), self.items[i].expr);
        Ok(self.push_hidden(text, expr, Role::Carry))
    }

    fn shard_sql(&self, limit: Option<u64>) -> String {
        let sql = self.sql;
        let insert_at = self.layout.items.last().map_or(self.layout.select_end, |r| r.end);
        let mut out = String::with_capacity(sql.len() + 40 * self.hidden.len() + 24);
        out.push_str(&sql[..insert_at]);
        for (j, h) in self.hidden.iter().enumerate() {
            out.push_str(if j == 0 && self.layout.items.is_empty() { " " } else { ", " });
            out.push_str(&h.text);
            out.push_str(&format!(" AS \"{HIDDEN_PREFIX}{}\"", j + 1));
        }
        out.push_str(&sql[insert_at..self.layout.tail.unwrap_or(self.layout.end)]);
        if let Some(n) = limit {
            if !out.ends_with(char::is_whitespace) {
                out.push(' ');
            }
            out.push_str(&format!("LIMIT {n}"));
        }
        out.truncate(out.trim_end().len());
        out
    }
}

fn check_wildcard(opts: &WildcardAdditionalOptions) -> Result<(), Unsupported> {
    let plain = opts.opt_ilike.is_none()
        && opts.opt_exclude.is_none()
        && opts.opt_except.is_none()
        && opts.opt_replace.is_none()
        && opts.opt_rename.is_none()
        && opts.opt_alias.is_none();
    if plain { Ok(()) } else { Err(unsupported("this select-list form is not supported")) }
}

/// OFFSET and LIMIT (or FETCH FIRST) as integer constants.
fn limits(q: &Query) -> Result<(u64, Option<u64>), Unsupported> {
    let mut offset = 0;
    let mut limit = None;
    match &q.limit_clause {
        None => {}
        Some(LimitClause::LimitOffset { limit: l, offset: o, limit_by }) => {
            if !limit_by.is_empty() {
                return Err(unsupported("LIMIT BY is not supported"));
            }
            if let Some(l) = l {
                limit = count(l, "LIMIT")?;
            }
            if let Some(o) = o {
                offset = count(&o.value, "OFFSET")?.unwrap_or(0);
            }
        }
        Some(LimitClause::OffsetCommaLimit { .. }) => return Err(unsupported("LIMIT offset, count is not supported")),
    }
    if let Some(fetch) = &q.fetch {
        if fetch.with_ties {
            return Err(unsupported("FETCH ... WITH TIES is not supported"));
        }
        if fetch.percent {
            return Err(unsupported("FETCH ... PERCENT is not supported"));
        }
        if q.limit_clause.as_ref().is_some_and(|l| matches!(l, LimitClause::LimitOffset { limit: Some(_), .. })) {
            return Err(unsupported("LIMIT together with FETCH is not supported"));
        }
        limit = match &fetch.quantity {
            None => Some(1),
            Some(e) => count(e, "FETCH FIRST")?,
        };
    }
    Ok((offset, limit))
}

/// A row count written as a constant; `None` for NULL (no limit).
fn count(e: &Expr, clause: &str) -> Result<Option<u64>, Unsupported> {
    let refuse = || unsupported(format!("{clause} must be an integer constant (not a parameter or an expression)"));
    match unnest(e) {
        Expr::Value(v) => match &v.value {
            Value::Number(s, false) => match s.parse::<u64>() {
                Ok(n) if n <= i64::MAX as u64 => Ok(Some(n)),
                _ => Err(refuse()),
            },
            Value::Null => Ok(None),
            _ => Err(refuse()),
        },
        _ => Err(refuse()),
    }
}

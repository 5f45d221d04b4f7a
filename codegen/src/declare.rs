//! Declared circuits: the syntax-free description behind the `circuit!` macro.
//!
//! The macro (crate `pc-macros`) only parses tokens into a [`Declaration`] and remembers each
//! part's span; everything else happens here: names are resolved, options checked, the IR built
//! through [`CircuitBuilder`], validated, compiled and emitted, and the typed module's Rust source
//! produced by the same function the build-script API uses ([`crate::aot::module_source`]). Every
//! error carries a [`Loc`] naming the declared item (by index) and the part of it at fault, so the
//! macro can point at the offending tokens.
//!
//! The declaration language, as the macro spells it:
//!
//! ```text
//! circuit! {
//!     name: tiny, vars: 5,                               // header (also `runtime: ::pc_runtime`,
//!                                                        //   `precision: bf16 | tf32 | fp32`)
//!     x0 = categorical(var 0, states 4, blocks 1, block 8);
//!     x1 = bernoulli(var 1, block 8);
//!     x2 = gaussian(var 2, block 8, min_sigma 0.01);
//!     x3 = indicator(var 3, states 2, block 2);
//!     x4 = binomial(var 4, trials 10, block 4);          // successes in 10 trials
//!     y0 = categorical(var 1, tie x0);                   // tied leaves: shape from the source
//!     p0 = product(x0, x1);                              // elementwise over blocks
//!     p1 = product(a, b; edges [[0, 1], [1, 0]]);        // explicit block edges
//!     s0 = sum(p0, p1; blocks 1, block 8);               // dense edges by default
//!     s1 = sum(p0; block 8, edges diagonal);             // or `edges [(0, 0), (0, 1)]`
//!     t  = sum(p2, p3; tie s0);                          // shares s0's weights
//!     root s0;
//! }
//! circuit! { name: pd8, template: pd(shape = (4, 4), latents = 8, input = bernoulli) }
//! ```
//!
//! Leaf keywords, and the option that completes each family (`states`, `min_sigma`, `trials`), are
//! the families' own (`pc_runtime::dist`). Options are written `key value` or `key = value`.
//! Templates: `pd` ([`crate::structures::pd`]),
//! `hmm` ([`crate::structures::hmm`]) and `rat_spn` ([`crate::structures::rat_spn`]); their
//! arguments are the fields of the options structs (`shape = (h, w)` for PD's height and width).

use std::collections::HashMap;

use crate::aot::{AotError, Embed, ModuleSpec, is_identifier, module_source};
use crate::builder::{CircuitBuilder, SumEdges};
use crate::error::CircuitError;
use crate::ir::{Circuit, Dist, Node, NodeId};
use crate::pipeline::{Options, Precision};
use crate::structures::{hmm, pd, rat_spn};
use pc_runtime::dist::{DistKind, ShapeParam, ShapeValue};

/// A value of an option or template argument.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
    Bool(bool),
    Ident(String),
    /// `(a, b, …)`
    Tuple(Vec<Value>),
    /// `[a, b, …]`
    List(Vec<Value>),
    /// `name(args)`
    Call(Call),
}

/// `name(arg, arg; key value, key = value)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub name: String,
    pub args: Vec<Arg>,
}

/// One argument of a [`Call`].
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A bare value (a child's name).
    Positional(Value),
    /// `key value` or `key = value`.
    Named(String, Value),
}

/// `name = call;`
#[derive(Clone, Debug, PartialEq)]
pub struct NodeDecl {
    pub name: String,
    pub call: Call,
}

/// The body of a declaration.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// Node statements and the root's name.
    Nodes { nodes: Vec<NodeDecl>, root: Option<String> },
    /// `template: pd(...)`.
    Template(Call),
}

/// A declared circuit.
#[derive(Clone, Debug, PartialEq)]
pub struct Declaration {
    /// The generated module's name.
    pub name: String,
    /// `vars: N` (required with nodes; with a template it must match the template's count).
    pub vars: Option<u64>,
    /// `precision: bf16 | tf32 | fp32` (default fp32): the operand precision of the GPU engine's
    /// tensor-core sum kernels, as `pcc --precision`.
    pub precision: Precision,
    pub body: Body,
}

/// Where in a declaration an error is.
#[derive(Clone, Debug, PartialEq)]
pub enum Loc {
    /// The declaration as a whole (e.g. a missing root).
    Whole,
    /// The header entry `key` (`name`, `vars`).
    Header(&'static str),
    /// Node statement `i` (its name).
    Node(usize),
    /// The kind of node statement `i` (`categorical`, `sum`, …).
    Kind(usize),
    /// Argument `arg` of node statement `node`.
    Arg { node: usize, arg: usize },
    /// The root statement.
    Root,
    /// The template's name.
    Template,
    /// Argument `i` of the template.
    TemplateArg(usize),
}

/// A declaration error: a message and where it is.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DeclError {
    pub loc: Loc,
    pub message: String,
}

fn err<T>(loc: Loc, message: impl Into<String>) -> Result<T, DeclError> {
    Err(DeclError { loc, message: message.into() })
}

/// The declared circuit's typed module as Rust source (see [`crate::aot::module_source`]), with
/// the data inline. `runtime` is the path of the runtime crate in the user's crate.
pub fn expand(decl: &Declaration, runtime: &str) -> Result<String, DeclError> {
    let (circuit, names) = build_circuit(decl)?;
    let opts = Options { precision: decl.precision, ..Options::default() };
    let artifacts = crate::pipeline::run(&circuit, &opts).map_err(|e| match e {
        AotError::Circuit(c) => circuit_error(decl, &names, c),
        AotError::Emit(e) => DeclError { loc: Loc::Whole, message: format!("CUDA emission failed: {e}") },
    })?;
    let spec = ModuleSpec { name: &decl.name, runtime, origin: "a `circuit!` declaration" };
    Ok(module_source(&spec, &artifacts, Embed::Inline))
}

/// Build and validate the declared circuit.
pub fn build(decl: &Declaration) -> Result<Circuit, DeclError> {
    build_circuit(decl).map(|(c, _)| c)
}

/// The circuit and, per IR node, the declared name (empty for template-built circuits).
fn build_circuit(decl: &Declaration) -> Result<(Circuit, Vec<String>), DeclError> {
    if !is_identifier(&decl.name) {
        return err(Loc::Header("name"), format!("`{}` is not a usable module name", decl.name));
    }
    match &decl.body {
        Body::Template(call) => {
            let c = template(call)?;
            if let Some(v) = decl.vars
                && v != c.num_vars as u64
            {
                return err(Loc::Header("vars"), format!("the template has {} variables, not {v}", c.num_vars));
            }
            Ok((c, Vec::new()))
        }
        Body::Nodes { nodes, root } => {
            let Some(vars) = decl.vars else {
                return err(Loc::Whole, "missing `vars: N` (the number of variables)");
            };
            let num_vars = u32::try_from(vars).or_else(|_| err(Loc::Header("vars"), "too many variables"))?;
            let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
            let b = declare_nodes(num_vars, nodes)?;
            let Some(root) = root else {
                return err(Loc::Whole, "missing root: end the declaration with `root NAME;`");
            };
            let Some(r) = names.iter().position(|n| n == root) else {
                return err(Loc::Root, format!("unknown node `{root}`"));
            };
            let c = b.finish(NodeId(r as u32)).map_err(|e| circuit_error(decl, &names, e))?;
            Ok((c, names))
        }
    }
}

/// The options of one node statement, by key, with their argument index.
struct Opts<'a> {
    node: usize,
    kind: &'a str,
    named: HashMap<&'a str, (usize, &'a Value)>,
}

impl<'a> Opts<'a> {
    fn new(node: usize, call: &'a Call, allowed: &[&str]) -> Result<Opts<'a>, DeclError> {
        let mut named = HashMap::new();
        for (i, a) in call.args.iter().enumerate() {
            if let Arg::Named(k, v) = a {
                if !allowed.contains(&k.as_str()) {
                    return err(Loc::Arg { node, arg: i }, format!("unknown option `{k}` of `{}`; expected one of: {}", call.name, allowed.join(", ")));
                }
                if named.insert(k.as_str(), (i, v)).is_some() {
                    return err(Loc::Arg { node, arg: i }, format!("option `{k}` is given twice"));
                }
            }
        }
        Ok(Opts { node, kind: &call.name, named })
    }

    fn loc(&self, key: &str) -> Option<Loc> {
        self.named.get(key).map(|(i, _)| Loc::Arg { node: self.node, arg: *i })
    }

    fn u32(&self, key: &str) -> Result<Option<u32>, DeclError> {
        match self.named.get(key) {
            None => Ok(None),
            Some((i, Value::Int(v))) => u32::try_from(*v).map(Some).or_else(|_| err(Loc::Arg { node: self.node, arg: *i }, format!("`{key}` is too large"))),
            Some((i, _)) => err(Loc::Arg { node: self.node, arg: *i }, format!("`{key}` takes a whole number")),
        }
    }

    fn required_u32(&self, key: &str) -> Result<u32, DeclError> {
        self.u32(key)?.map_or_else(|| err(Loc::Kind(self.node), format!("`{}` needs `{key} N`", self.kind)), Ok)
    }

    fn float(&self, key: &str) -> Result<Option<f32>, DeclError> {
        match self.named.get(key) {
            None => Ok(None),
            Some((_, Value::Float(v))) => Ok(Some(*v as f32)),
            Some((_, Value::Int(v))) => Ok(Some(*v as f32)),
            Some((i, _)) => err(Loc::Arg { node: self.node, arg: *i }, format!("`{key}` takes a number")),
        }
    }

    fn ident(&self, key: &str) -> Result<Option<(usize, &'a str)>, DeclError> {
        match self.named.get(key) {
            None => Ok(None),
            Some((i, Value::Ident(v))) => Ok(Some((*i, v.as_str()))),
            Some((i, _)) => err(Loc::Arg { node: self.node, arg: *i }, format!("`{key}` takes a node name")),
        }
    }
}

fn declare_nodes(num_vars: u32, nodes: &[NodeDecl]) -> Result<CircuitBuilder, DeclError> {
    let mut b = CircuitBuilder::new(num_vars);
    let mut ids: HashMap<&str, usize> = HashMap::new();
    // Resolve a reference to an earlier node.
    let lookup = |ids: &HashMap<&str, usize>, at: Loc, name: &str| -> Result<NodeId, DeclError> {
        match ids.get(name) {
            Some(&i) => Ok(NodeId(i as u32)),
            None if nodes.iter().any(|n| n.name == name) => err(at, format!("`{name}` is declared further down; declare a node before using it")),
            None => err(at, format!("unknown node `{name}`")),
        }
    };
    for (i, n) in nodes.iter().enumerate() {
        if ids.contains_key(n.name.as_str()) {
            return err(Loc::Node(i), format!("duplicate node name `{}`", n.name));
        }
        let call = &n.call;
        let kind = call.name.as_str();
        let family = DistKind::from_name(kind);
        match kind {
            _ if family.is_some() => declare_leaf(&mut b, i, call, family, &|at, name| lookup(&ids, at, name))?,
            "product" | "sum" => {
                let mut children = Vec::new();
                for (a, arg) in call.args.iter().enumerate() {
                    match arg {
                        Arg::Positional(Value::Ident(c)) => children.push(lookup(&ids, Loc::Arg { node: i, arg: a }, c)?),
                        Arg::Positional(_) => {
                            return err(Loc::Arg { node: i, arg: a }, "expected a child node's name");
                        }
                        Arg::Named(..) => {}
                    }
                }
                if kind == "product" {
                    let o = Opts::new(i, call, &["edges"])?;
                    match o.named.get("edges") {
                        None => b.multiply(&children),
                        Some((a, v)) => {
                            let edges = int_matrix(v).ok_or(DeclError {
                                loc: Loc::Arg { node: i, arg: *a },
                                message: "`edges` of a product is a list of rows, one child block per child: `[[0, 0], [1, 1]]`".into(),
                            })?;
                            b.multiply_with_edges(&children, edges)
                        }
                    };
                } else {
                    let o = Opts::new(i, call, &["blocks", "block", "edges", "tie"])?;
                    if let Some((ta, src)) = o.ident("tie")? {
                        let s = lookup(&ids, Loc::Arg { node: i, arg: ta }, src)?;
                        let Node::Sum { num_blocks, block_size, .. } = *b.node(s) else {
                            return err(Loc::Arg { node: i, arg: ta }, format!("`{src}` is not a sum; sums tie only to sums"));
                        };
                        if let Some(l) = o.loc("edges") {
                            return err(l, format!("a tied sum has the edges of its source `{src}`"));
                        }
                        for (key, want) in [("blocks", num_blocks), ("block", block_size)] {
                            if let Some(v) = o.u32(key)?
                                && v != want
                            {
                                return err(o.loc(key).expect("given"), format!("tied to `{src}`, which has `{key} {want}`"));
                            }
                        }
                        b.tied_summate(s, &children);
                    } else {
                        let blocks = o.u32("blocks")?.unwrap_or(1);
                        let block = o.u32("block")?.unwrap_or(1);
                        let edges = match o.named.get("edges") {
                            None => SumEdges::Dense,
                            Some((_, Value::Ident(e))) if e == "dense" => SumEdges::Dense,
                            Some((_, Value::Ident(e))) if e == "diagonal" => SumEdges::BlockDiagonal,
                            Some((a, v)) => SumEdges::List(pairs(v).ok_or(DeclError {
                                loc: Loc::Arg { node: i, arg: *a },
                                message: "`edges` of a sum is `dense`, `diagonal` or a list of (sum block, child block) pairs: `[(0, 0), (0, 1)]`".into(),
                            })?),
                        };
                        b.summate(&children, blocks, block, edges);
                    }
                }
            }
            _ => {
                let kinds: Vec<&str> = DistKind::ALL.iter().map(|k| k.name()).chain(["product", "sum"]).collect();
                return err(Loc::Kind(i), format!("unknown node kind `{kind}`; expected one of: {}", kinds.join(", ")));
            }
        }
        ids.insert(&n.name, i);
    }
    Ok(b)
}

/// A leaf statement: `family(var V, blocks B, block S, <its shape option>)`, or a leaf tied to an
/// earlier one (`tie x0`), whose shape options may repeat the source's but not differ from them.
/// The family's [`ShapeParam`] says which option completes it (`states`, `min_sigma`, `trials`).
fn declare_leaf(
    b: &mut CircuitBuilder,
    i: usize,
    call: &Call,
    family: Option<DistKind>,
    lookup: &dyn Fn(Loc, &str) -> Result<NodeId, DeclError>,
) -> Result<(), DeclError> {
    let kind = call.name.as_str();
    let Some(family) = family else { return err(Loc::Kind(i), format!("`{kind}` is not a leaf family")) };
    if let Some(a) = call.args.iter().position(|a| matches!(a, Arg::Positional(_))) {
        return err(Loc::Arg { node: i, arg: a }, format!("`{kind}` takes options (`var N`, …), not children"));
    }
    let shape = family.info().shape;
    let allowed: Vec<&str> = ["var"].into_iter().chain(shape.map(|s| s.key())).chain(["blocks", "block", "tie"]).collect();
    let o = Opts::new(i, call, &allowed)?;
    let var = o.required_u32("var")?;
    if let Some((ta, src)) = o.ident("tie")? {
        let s = lookup(Loc::Arg { node: i, arg: ta }, src)?;
        let Node::Input { num_blocks, block_size, dist, .. } = *b.node(s) else {
            return err(Loc::Arg { node: i, arg: ta }, format!("`{src}` is not a leaf; leaves tie only to leaves"));
        };
        if dist.kind() != family {
            return err(Loc::Kind(i), format!("`{src}` is {}; a tied leaf has its source's distribution", dist.info().name));
        }
        // A whole-number shape (`states`, `trials`) given on a tied leaf must be the source's.
        let count = match (shape, dist.shape()) {
            (Some(ShapeParam::Count { key, .. }), Some(ShapeValue::Count(v))) => Some((key, v)),
            _ => None,
        };
        for (key, want) in [("blocks", num_blocks), ("block", block_size)].into_iter().chain(count) {
            if let Some(v) = o.u32(key)?
                && v != want
            {
                return err(o.loc(key).expect("given"), format!("tied to `{src}`, which has `{key} {want}`"));
            }
        }
        b.tied_inputs(s, var);
    } else {
        let blocks = o.u32("blocks")?.unwrap_or(1);
        let block = o.u32("block")?.unwrap_or(1);
        let value = match shape {
            None => None,
            Some(ShapeParam::Count { key, .. }) => Some(ShapeValue::Count(o.required_u32(key)?)),
            Some(ShapeParam::Real { key, default, .. }) => Some(ShapeValue::Real(o.float(key)?.unwrap_or(default))),
        };
        let Some(dist) = family.with_shape(value) else { return err(Loc::Kind(i), format!("`{kind}` does not take {value:?}")) };
        b.inputs(var, blocks, block, dist);
    }
    Ok(())
}

fn int(v: &Value) -> Option<u32> {
    match v {
        Value::Int(x) => u32::try_from(*x).ok(),
        _ => None,
    }
}

fn int_matrix(v: &Value) -> Option<Vec<Vec<u32>>> {
    let Value::List(rows) = v else { return None };
    rows.iter()
        .map(|r| match r {
            Value::List(xs) | Value::Tuple(xs) => xs.iter().map(int).collect(),
            _ => None,
        })
        .collect()
}

fn pairs(v: &Value) -> Option<Vec<[u32; 2]>> {
    int_matrix(v)?.into_iter().map(|r| <[u32; 2]>::try_from(r).ok()).collect()
}

/// A validation error of a declared circuit, located and with node ids replaced by names.
fn circuit_error(decl: &Declaration, names: &[String], e: CircuitError) -> DeclError {
    let Body::Nodes { nodes, .. } = &decl.body else {
        return DeclError { loc: Loc::Template, message: e.to_string() };
    };
    let arg_named = |node: NodeId, key: &str| {
        nodes[node.index()].call.args.iter().position(|a| matches!(a, Arg::Named(k, _) if k == key)).map(|arg| Loc::Arg { node: node.index(), arg })
    };
    let child_arg = |node: NodeId, child: NodeId| {
        let name = &names[child.index()];
        nodes[node.index()]
            .call
            .args
            .iter()
            .position(|a| matches!(a, Arg::Positional(Value::Ident(c)) if c == name))
            .map(|arg| Loc::Arg { node: node.index(), arg })
    };
    let loc = match &e {
        CircuitError::Empty => Some(Loc::Whole),
        CircuitError::BadRoot { .. } | CircuitError::RootNotScalar { .. } | CircuitError::VarNotCovered { .. } => Some(Loc::Root),
        CircuitError::EmptyNode { node } => arg_named(*node, "blocks").or(arg_named(*node, "tie")),
        CircuitError::BadBlockSize { node, .. } => arg_named(*node, "block").or(arg_named(*node, "tie")),
        CircuitError::VarOutOfRange { node, .. } => arg_named(*node, "var"),
        CircuitError::InvalidDistribution { node, .. } => {
            // At the option that completes the family (`states 0`), else at the keyword.
            let shape = DistKind::from_name(&nodes[node.index()].call.name).and_then(|k| k.info().shape);
            shape.and_then(|s| arg_named(*node, s.key())).or(Some(Loc::Kind(node.index())))
        }
        CircuitError::BlockSizeMismatch { node, child, .. } => child_arg(*node, *child),
        CircuitError::NonDecomposable { node, second, .. } | CircuitError::NonSmooth { node, second, .. } => child_arg(*node, *second),
        CircuitError::ProductEdgeShape { node, .. }
        | CircuitError::EdgeOutOfRange { node, .. }
        | CircuitError::SumBlockWithoutEdges { node, .. }
        | CircuitError::DuplicateEdge { node, .. } => arg_named(*node, "edges").or(arg_named(*node, "blocks")),
        CircuitError::BadTie { node, .. } => arg_named(*node, "tie"),
        CircuitError::DomainConflict { second, .. } => arg_named(*second, "var"),
        CircuitError::NoChildren { node, .. } => Some(Loc::Kind(node.index())),
        _ => None,
    };
    let node = match &e {
        CircuitError::BadChild { node, .. }
        | CircuitError::EmptyNode { node }
        | CircuitError::BadBlockSize { node, .. }
        | CircuitError::NoChildren { node, .. }
        | CircuitError::VarOutOfRange { node, .. }
        | CircuitError::InvalidDistribution { node, .. }
        | CircuitError::BlockSizeMismatch { node, .. }
        | CircuitError::ProductEdgeShape { node, .. }
        | CircuitError::EdgeOutOfRange { node, .. }
        | CircuitError::NonDecomposable { node, .. }
        | CircuitError::NonSmooth { node, .. }
        | CircuitError::SumBlockWithoutEdges { node, .. }
        | CircuitError::DuplicateEdge { node, .. }
        | CircuitError::BadTie { node, .. }
        | CircuitError::NoParams { node } => Some(node.index()),
        _ => None,
    };
    let loc = loc.or(node.map(Loc::Node)).unwrap_or(Loc::Whole);
    DeclError { loc, message: name_nodes(&e.to_string(), names) }
}

/// Replace every `node N` of an IR error message by the declared name `` `x` ``.
fn name_nodes(msg: &str, names: &[String]) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(p) = rest.find("node ") {
        let boundary = p == 0 || !rest[..p].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let digits = rest[p + 5..].chars().take_while(|c| c.is_ascii_digit()).count();
        let name = rest[p + 5..p + 5 + digits].parse::<usize>().ok().and_then(|i| names.get(i));
        match name {
            Some(name) if boundary && digits > 0 => {
                out.push_str(&rest[..p]);
                out.push('`');
                out.push_str(name);
                out.push('`');
                rest = &rest[p + 5 + digits..];
            }
            _ => {
                out.push_str(&rest[..p + 5]);
                rest = &rest[p + 5..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Template arguments by name, each used at most once; unknown names are errors.
struct TemplateArgs<'a> {
    named: HashMap<&'a str, (usize, &'a Value)>,
}

impl<'a> TemplateArgs<'a> {
    fn new(call: &'a Call, allowed: &[&str]) -> Result<TemplateArgs<'a>, DeclError> {
        let mut named = HashMap::new();
        for (i, a) in call.args.iter().enumerate() {
            let Arg::Named(k, v) = a else {
                return err(Loc::TemplateArg(i), format!("template arguments are named: `{} = …`", allowed[0]));
            };
            if !allowed.contains(&k.as_str()) {
                return err(Loc::TemplateArg(i), format!("unknown argument `{k}` of template `{}`; expected one of: {}", call.name, allowed.join(", ")));
            }
            if named.insert(k.as_str(), (i, v)).is_some() {
                return err(Loc::TemplateArg(i), format!("argument `{k}` is given twice"));
            }
        }
        Ok(TemplateArgs { named })
    }

    fn get<T>(&self, key: &str, what: &str, f: impl Fn(&Value) -> Option<T>) -> Result<Option<T>, DeclError> {
        match self.named.get(key) {
            None => Ok(None),
            Some((i, v)) => f(v).map(Some).ok_or(DeclError { loc: Loc::TemplateArg(*i), message: format!("`{key}` takes {what}") }),
        }
    }

    fn u32(&self, key: &str) -> Result<Option<u32>, DeclError> {
        self.get(key, "a whole number", int)
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, DeclError> {
        self.get(key, "`true` or `false`", |v| if let Value::Bool(b) = v { Some(*b) } else { None })
    }

    fn pair(&self, key: &str) -> Result<Option<(u32, u32)>, DeclError> {
        self.get(key, "a pair `(a, b)`", |v| match v {
            Value::Tuple(xs) if xs.len() == 2 => Some((int(&xs[0])?, int(&xs[1])?)),
            _ => None,
        })
    }

    fn dist(&self, key: &str) -> Result<Option<Dist>, DeclError> {
        self.get(key, &format!("a distribution: {}", dist_forms()), dist_value)
    }
}

/// A distribution as a template argument: `bernoulli`, `categorical(N)`, `gaussian(MIN_SIGMA)`, …
/// (a family's keyword, called with its shape value if it has one).
fn dist_value(v: &Value) -> Option<Dist> {
    let (name, args): (&str, &[Arg]) = match v {
        Value::Ident(n) => (n, &[]),
        Value::Call(c) => (&c.name, &c.args),
        _ => return None,
    };
    let family = DistKind::from_name(name)?;
    let num = || match args {
        [Arg::Positional(v)] | [Arg::Named(_, v)] => Some(v),
        _ => None,
    };
    let value = match family.info().shape {
        None if args.is_empty() => None,
        None => return None,
        Some(ShapeParam::Count { .. }) => Some(ShapeValue::Count(int(num()?)?)),
        Some(ShapeParam::Real { .. }) => Some(ShapeValue::Real(match num()? {
            Value::Float(f) => *f as f32,
            Value::Int(i) => *i as f32,
            _ => return None,
        })),
    };
    family.with_shape(value)
}

/// How a template argument spells each family: "`categorical(N)`, `bernoulli`, … or `binomial(N)`".
fn dist_forms() -> String {
    let forms: Vec<String> = DistKind::ALL
        .iter()
        .map(|k| match k.info().shape {
            None => format!("`{}`", k.name()),
            Some(s) => format!("`{}({})`", k.name(), s.placeholder()),
        })
        .collect();
    match forms.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => forms.concat(),
    }
}

fn template(call: &Call) -> Result<Circuit, DeclError> {
    let c = match call.name.as_str() {
        "pd" => {
            let a =
                TemplateArgs::new(call, &["shape", "latents", "split_intervals", "max_split_depth", "max_prod_block_conns", "input", "block_size", "seed"])?;
            let d = pd::PdOptions::default();
            let (height, width) = a.pair("shape")?.ok_or(DeclError { loc: Loc::Template, message: "`pd` needs `shape = (height, width)`".into() })?;
            let opts = pd::PdOptions {
                height,
                width,
                split_intervals: a.pair("split_intervals")?.unwrap_or(d.split_intervals),
                max_split_depth: a.u32("max_split_depth")?,
                latents: a.u32("latents")?.unwrap_or(d.latents),
                max_prod_block_conns: a.u32("max_prod_block_conns")?.unwrap_or(d.max_prod_block_conns),
                input: a.dist("input")?.unwrap_or(d.input),
                block_size: a.u32("block_size")?,
                seed: a.u32("seed")?.map_or(d.seed, u64::from),
            };
            pd::build(&opts)
        }
        "hmm" => {
            let a = TemplateArgs::new(call, &["seq_length", "hidden", "num_emits", "homogeneous", "block_size"])?;
            let d = hmm::HmmOptions::default();
            let opts = hmm::HmmOptions {
                seq_length: a.u32("seq_length")?.unwrap_or(d.seq_length),
                hidden: a.u32("hidden")?.unwrap_or(d.hidden),
                num_emits: a.u32("num_emits")?.unwrap_or(d.num_emits),
                homogeneous: a.bool("homogeneous")?.unwrap_or(d.homogeneous),
                block_size: a.u32("block_size")?,
            };
            hmm::build(&opts)
        }
        "rat_spn" => {
            let a = TemplateArgs::new(call, &["num_vars", "latents", "depth", "num_repetitions", "num_pieces", "input", "block_size", "seed"])?;
            let d = rat_spn::RatSpnOptions::default();
            let opts = rat_spn::RatSpnOptions {
                num_vars: a.u32("num_vars")?.unwrap_or(d.num_vars),
                latents: a.u32("latents")?.unwrap_or(d.latents),
                depth: a.u32("depth")?.unwrap_or(d.depth),
                num_repetitions: a.u32("num_repetitions")?.unwrap_or(d.num_repetitions),
                num_pieces: a.u32("num_pieces")?.unwrap_or(d.num_pieces),
                input: a.dist("input")?.unwrap_or(d.input),
                block_size: a.u32("block_size")?,
                seed: a.u32("seed")?.map_or(d.seed, u64::from),
            };
            rat_spn::build(&opts)
        }
        other => return err(Loc::Template, format!("unknown template `{other}`; expected one of: pd, hmm, rat_spn")),
    };
    c.map_err(|e| DeclError { loc: Loc::Template, message: format!("the template does not build a valid circuit: {e}") })
}

#[cfg(test)]
mod tests {
    use super::name_nodes;

    #[test]
    fn node_ids_become_names() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(name_nodes("node 2: children node 0 and node 1 differ", &names), "`c`: children `a` and `b` differ");
        assert_eq!(name_nodes("subnode 1 and node 9", &names), "subnode 1 and node 9");
    }
}

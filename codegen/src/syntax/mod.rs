//! The `circuit!` language: tokens → [`crate::declare::Declaration`], remembering each part's span
//! ([`Spans`]) so that errors found by the compiler can point at the tokens they concern. Here
//! rather than in the proc-macro crate (which only calls it), so that it can be tested and fuzzed
//! (`fuzz/fuzz_targets/circuit_macro.rs`) like any library code.

mod value;

use crate::declare::{Body, Declaration, Loc, NodeDecl};
use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Error, Ident, LitInt, Token};

pub use value::parse_call;

/// A source range, from the first token's span to the last's. As tokens it is two punctuation
/// marks with those spans, so `syn::Error::new_spanned` underlines the whole range on stable.
#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub start: Span,
    pub end: Span,
}

impl Range {
    pub fn new(start: Span, end: Span) -> Range {
        Range { start, end }
    }
    pub fn one(span: Span) -> Range {
        Range { start: span, end: span }
    }
}

impl ToTokens for Range {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        for span in [self.start, self.end] {
            let mut p = proc_macro2::Punct::new('.', proc_macro2::Spacing::Alone);
            p.set_span(span);
            tokens.extend([proc_macro2::TokenTree::Punct(p)]);
        }
    }
}

/// Spans of a call `name(arg, …)`: the name and each argument.
#[derive(Clone, Debug)]
pub struct CallSpans {
    pub name: Range,
    pub args: Vec<Range>,
}

/// Spans of one node statement `name = kind(args);`.
#[derive(Clone, Debug)]
pub struct NodeSpans {
    pub name: Range,
    pub call: CallSpans,
}

/// Where each part of the declaration is in the macro input.
#[derive(Clone, Debug)]
pub struct Spans {
    pub name: Range,
    pub vars: Option<Range>,
    pub nodes: Vec<NodeSpans>,
    pub root: Option<Range>,
    pub template: Option<CallSpans>,
}

impl Spans {
    /// The tokens an error at `loc` points at.
    pub fn range(&self, loc: &Loc) -> Range {
        let whole = Range::one(Span::call_site());
        match loc {
            Loc::Whole => whole,
            Loc::Header("vars") => self.vars.unwrap_or(whole),
            Loc::Header(_) => self.name,
            Loc::Node(i) => self.nodes.get(*i).map_or(whole, |n| n.name),
            Loc::Kind(i) => self.nodes.get(*i).map_or(whole, |n| n.call.name),
            Loc::Arg { node, arg } => self.nodes.get(*node).and_then(|n| n.call.args.get(*arg)).copied().unwrap_or(whole),
            Loc::Root => self.root.unwrap_or(whole),
            Loc::Template => self.template.as_ref().map_or(whole, |t| t.name),
            Loc::TemplateArg(i) => self.template.as_ref().and_then(|t| t.args.get(*i)).copied().unwrap_or(whole),
        }
    }
}

/// The macro input: the declaration, the runtime path its expansion names, and spans.
pub struct Input {
    pub decl: Declaration,
    pub runtime: String,
    pub spans: Spans,
}

const HEADERS: &str = "`name`, `vars`, `precision`, `template` or `runtime`";

impl Parse for Input {
    fn parse(input: ParseStream) -> syn::Result<Input> {
        let mut name: Option<Ident> = None;
        let mut vars: Option<(u64, Range)> = None;
        let mut runtime: Option<syn::Path> = None;
        let mut precision: Option<crate::pipeline::Precision> = None;
        let mut template = None;
        let mut nodes = Vec::new();
        let mut node_spans = Vec::new();
        let mut root: Option<Ident> = None;
        while !input.is_empty() {
            // Header `key: value`, separated by `,` (or `;`).
            if input.peek(Ident::peek_any) && input.peek2(Token![:]) && !input.peek2(Token![::]) {
                let key = input.call(Ident::parse_any)?;
                input.parse::<Token![:]>()?;
                let dup = || Error::new(key.span(), format!("`{key}` is given twice"));
                match key.to_string().as_str() {
                    "name" if name.is_none() => name = Some(input.call(Ident::parse_any)?),
                    "vars" if vars.is_none() => {
                        let lit: LitInt = input.parse()?;
                        vars = Some((lit.base10_parse()?, Range::one(lit.span())));
                    }
                    "runtime" if runtime.is_none() => runtime = Some(input.call(syn::Path::parse_mod_style)?),
                    "precision" if precision.is_none() => {
                        let p = input.call(Ident::parse_any)?;
                        precision = Some(p.to_string().parse().map_err(|e: String| Error::new(p.span(), e))?);
                    }
                    "template" if template.is_none() => {
                        let (call, spans) = parse_call(input)?;
                        template = Some((call, spans));
                    }
                    "name" | "vars" | "runtime" | "precision" | "template" => return Err(dup()),
                    _ => return Err(Error::new(key.span(), format!("unknown header `{key}`; expected {HEADERS}"))),
                }
                if input.peek(Token![,]) {
                    input.parse::<Token![,]>()?;
                } else if input.peek(Token![;]) {
                    input.parse::<Token![;]>()?;
                } else if !input.is_empty() {
                    return Err(input.error("expected `,` after a header entry"));
                }
                continue;
            }
            // Statement `root NAME;` or `NAME = kind(args);`.
            let id = input.call(Ident::parse_any)?;
            if id == "root" && !input.peek(Token![=]) {
                let r = input.call(Ident::parse_any)?;
                if root.is_some() {
                    return Err(Error::new(r.span(), "a circuit has one root; `root` is given twice"));
                }
                root = Some(r);
            } else {
                if !input.peek(Token![=]) {
                    return Err(input.error(format!("expected `=` (a node: `{id} = sum(…);`) or `:` (a header: {HEADERS})")));
                }
                input.parse::<Token![=]>()?;
                let (call, call_spans) = parse_call(input)?;
                nodes.push(NodeDecl { name: id.unraw().to_string(), call });
                node_spans.push(NodeSpans { name: Range::one(id.span()), call: call_spans });
            }
            if !input.is_empty() {
                input.parse::<Token![;]>()?;
            }
        }
        let Some(name) = name else {
            return Err(Error::new(Span::call_site(), "missing `name: IDENT` (the name of the generated module)"));
        };
        let body = match template {
            Some((call, spans)) => {
                if let Some(n) = node_spans.first() {
                    return Err(Error::new(n.name.start, "a circuit is either a `template` or node statements, not both"));
                }
                if let Some(r) = &root {
                    return Err(Error::new(r.span(), "a `template` circuit has no `root` statement"));
                }
                (Body::Template(call), Some(spans))
            }
            None => (Body::Nodes { nodes, root: root.as_ref().map(|r| r.unraw().to_string()) }, None),
        };
        let runtime = runtime.map_or_else(|| "::pcc::runtime".to_string(), |p| p.to_token_stream().to_string());
        Ok(Input {
            decl: Declaration { name: name.to_string(), vars: vars.map(|v| v.0), precision: precision.unwrap_or_default(), body: body.0 },
            runtime,
            spans: Spans {
                name: Range::one(name.span()),
                vars: vars.map(|v| v.1),
                nodes: node_spans,
                root: root.map(|r| Range::one(r.span())),
                template: body.1,
            },
        })
    }
}

//! Calls, arguments and values: `name(child, key value, key = (1, 2), key [..], key f(x))`.

use crate::declare::{Arg, Call, Value};
use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::ParseStream;
use syn::{Ident, LitBool, LitFloat, LitInt, Token, bracketed, parenthesized, token};

use super::{CallSpans, Range};

/// `name(args)`, with the spans of the name and of each argument.
pub fn parse_call(input: ParseStream) -> syn::Result<(Call, CallSpans)> {
    let name = input.call(Ident::parse_any)?;
    if !input.peek(token::Paren) {
        return Err(input.error(format!("expected `(` after `{name}`")));
    }
    let (args, ranges, _) = parse_args(input)?;
    Ok((Call { name: name.to_string(), args }, CallSpans { name: Range::one(name.span()), args: ranges }))
}

/// `( arg (,|;) arg … )`: the arguments, their spans and the closing parenthesis' span.
fn parse_args(input: ParseStream) -> syn::Result<(Vec<Arg>, Vec<Range>, Span)> {
    let content;
    let paren = parenthesized!(content in input);
    let (mut args, mut ranges) = (Vec::new(), Vec::new());
    while !content.is_empty() {
        let (arg, range) = parse_arg(&content)?;
        args.push(arg);
        ranges.push(range);
        if content.peek(Token![,]) {
            content.parse::<Token![,]>()?;
        } else if content.peek(Token![;]) {
            content.parse::<Token![;]>()?;
        } else if !content.is_empty() {
            return Err(content.error("expected `,` or `;` between arguments"));
        }
    }
    Ok((args, ranges, paren.span.close()))
}

fn at_arg_end(input: ParseStream) -> bool {
    input.is_empty() || input.peek(Token![,]) || input.peek(Token![;])
}

/// A bare name (a child), a call, or `key value` / `key = value`.
fn parse_arg(input: ParseStream) -> syn::Result<(Arg, Range)> {
    if input.peek(Ident::peek_any) && !input.peek(LitBool) {
        let key = input.call(Ident::parse_any)?;
        let start = key.span();
        if at_arg_end(input) {
            return Ok((Arg::Positional(Value::Ident(key.unraw().to_string())), Range::one(start)));
        }
        if input.peek(token::Paren) {
            let (args, _, end) = parse_args(input)?;
            return Ok((Arg::Positional(Value::Call(Call { name: key.to_string(), args })), Range::new(start, end)));
        }
        if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
        }
        let (v, _, end) = parse_value(input)?;
        return Ok((Arg::Named(key.to_string(), v), Range::new(start, end)));
    }
    let (v, start, end) = parse_value(input)?;
    Ok((Arg::Positional(v), Range::new(start, end)))
}

/// A number, `true`/`false`, a name, a call `f(..)`, a tuple `(..)` or a list `[..]`.
fn parse_value(input: ParseStream) -> syn::Result<(Value, Span, Span)> {
    if input.peek(LitBool) {
        let b: LitBool = input.parse()?;
        return Ok((Value::Bool(b.value), b.span, b.span));
    }
    if input.peek(LitInt) {
        let l: LitInt = input.parse()?;
        return Ok((Value::Int(l.base10_parse()?), l.span(), l.span()));
    }
    if input.peek(LitFloat) {
        let l: LitFloat = input.parse()?;
        return Ok((Value::Float(l.base10_parse()?), l.span(), l.span()));
    }
    if input.peek(Ident::peek_any) {
        let id = input.call(Ident::parse_any)?;
        if input.peek(token::Paren) {
            let (args, _, end) = parse_args(input)?;
            return Ok((Value::Call(Call { name: id.to_string(), args }), id.span(), end));
        }
        return Ok((Value::Ident(id.unraw().to_string()), id.span(), id.span()));
    }
    if input.peek(token::Paren) {
        let content;
        let p = parenthesized!(content in input);
        return Ok((Value::Tuple(values(&content)?), p.span.open(), p.span.close()));
    }
    if input.peek(token::Bracket) {
        let content;
        let b = bracketed!(content in input);
        return Ok((Value::List(values(&content)?), b.span.open(), b.span.close()));
    }
    Err(input.error("expected a value: a number, `true`/`false`, a name, `(a, b)` or `[a, b]`"))
}

fn values(input: ParseStream) -> syn::Result<Vec<Value>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        out.push(parse_value(input)?.0);
        if !input.is_empty() {
            input.parse::<Token![,]>()?;
        }
    }
    Ok(out)
}

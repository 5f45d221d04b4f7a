//! [`pc_codegen::syntax::Input`] → tokens. pc-codegen does the work (checking, building, compiling,
//! emitting and writing the module's Rust source, the same text the build-script API writes);
//! this module turns its errors into `syn::Error`s at the recorded spans and its text into tokens.

use proc_macro2::{Span, TokenStream};

use pc_codegen::syntax::Input;

pub fn expand(input: &Input) -> syn::Result<TokenStream> {
    let text = pc_codegen::declare::expand(&input.decl, &input.runtime).map_err(|e| syn::Error::new_spanned(input.spans.range(&e.loc), e.message))?;
    text.parse::<TokenStream>().map_err(|e| syn::Error::new(Span::call_site(), format!("pcc bug: the generated module does not parse: {e}")))
}

pcc::circuit! { name: c, template: pd(shape = (4, 4), latent = 8) }

fn main() {}

pcc::circuit! { name: c, template: hclt(latents = 8) }

fn main() {}

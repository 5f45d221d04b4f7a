pcc::circuit! {
    name: c, vars: 1,
    x0 bernoulli(var 0);
    root x0;
}

fn main() {}

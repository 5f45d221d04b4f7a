pcc::circuit! {
    name: c, vars: 1,
    x0 = poisson(var 0, block 4);
    s = sum(x0);
    root s;
}

fn main() {}

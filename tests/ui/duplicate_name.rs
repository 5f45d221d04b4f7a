pcc::circuit! {
    name: c, vars: 2,
    x0 = bernoulli(var 0, block 4);
    x0 = bernoulli(var 1, block 4);
    p = product(x0, x0);
    s = sum(p);
    root s;
}

fn main() {}

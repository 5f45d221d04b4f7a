pcc::circuit! {
    name: c, vars: 2,
    s = sum(p);
    x0 = bernoulli(var 0, block 4);
    x1 = bernoulli(var 1, block 4);
    p = product(x0, x1);
    root s;
}

fn main() {}

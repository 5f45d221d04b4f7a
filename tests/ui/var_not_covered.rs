pcc::circuit! {
    name: c, vars: 3,
    x0 = bernoulli(var 0, block 4);
    x1 = bernoulli(var 1, block 4);
    p = product(x0, x1);
    s = sum(p);
    root s;
}

fn main() {}

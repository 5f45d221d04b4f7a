pcc::circuit! {
    name: c, vars: 2,
    x0 = binomial(var 0, trials 0, block 4);
    x1 = bernoulli(var 1, block 4);
    p = product(x0, x1);
    s = sum(p);
    root s;
}

fn main() {}

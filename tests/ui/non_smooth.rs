pcc::circuit! {
    name: c, vars: 3,
    x0 = bernoulli(var 0, block 4);
    x1 = bernoulli(var 1, block 4);
    x2 = bernoulli(var 2, block 4);
    a = product(x0, x1);
    b = product(x0, x2);
    s = sum(a, b; block 4);
    root s;
}

fn main() {}

pcc::circuit! {
    name: c, vars: 1,
    x0 = bernoulli(var 0, blocksize 4);
    s = sum(x0);
    root s;
}

fn main() {}

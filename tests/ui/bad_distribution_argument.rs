pcc::circuit! {
    name: c, vars: 1,
    x0 = gaussian(var 0, states 4);
    s = sum(x0);
    root s;
}

fn main() {}

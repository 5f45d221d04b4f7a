use pcc::codegen::{CircuitBuilder, Dist, Model, SumEdges};
use pcc::runtime::Evidence;

#[test]
fn two_var_mixture_sums_to_one() {
    let mut b = CircuitBuilder::new(2);
    let x0 = b.inputs(0, 2, 2, Dist::Categorical { num_cats: 3 });
    let x1 = b.inputs(1, 2, 2, Dist::Bernoulli);
    let p = b.multiply(&[x0, x1]);
    let s = b.summate(&[p], 1, 2, SumEdges::Dense);
    let s2 = b.summate(&[s], 1, 1, SumEdges::Dense);
    let c = b.finish(s2).unwrap();
    let m = Model::random(c, 7).unwrap();
    let e = m.cpu_engine().unwrap();
    let mut vals = vec![];
    for a in 0..3 {
        for bb in 0..2 {
            vals.push(a as f32);
            vals.push(bb as f32);
        }
    }
    let ll = e.log_likelihood(&Evidence::new(2, vals).unwrap()).unwrap();
    let total: f64 = ll.iter().map(|&l| (l as f64).exp()).sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");
}

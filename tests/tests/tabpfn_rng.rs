//! The tabpfn plugin's port of numpy's random Generator against numpy itself
//! (tests/python/gen_tabpfn.py writes rng.json with numpy 2.4's draws): every call tabpfn's
//! member-0 path makes, on fresh generators and in sequences on one generator (numpy keeps half of
//! a 64-bit draw for the next 32-bit one), and member 0's seed and class permutation, which the
//! generator checked against tabpfn's own fitted estimators. Exact equality: these are integers
//! and bit patterns.

use deepembed_tabpfn::rng::{member0_plan, ClassShift, Generator};
use deepembed_tests::*;
use serde_json::Value;

fn rng_json() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("tabpfn").join("rng.json")).unwrap()).unwrap()
}

/// Runs one recorded numpy call on `g`; returns what we drew, as numpy's JSON spells it.
fn call(g: &mut Generator, call: &Value) -> Value {
    let args = &call["args"];
    let int = |key: &str| args[key].as_i64().unwrap();
    match call["method"].as_str().unwrap() {
        "integers" => match args["size"].as_u64() {
            Some(n) => Value::from(g.integers_n(int("low"), int("high"), n as usize)),
            None => Value::from(g.integers(int("low"), int("high"))),
        },
        "random" => {
            let bits: Vec<u64> = g.random_n(int("size") as usize).iter().map(|x| x.to_bits()).collect();
            Value::from(bits)
        }
        "permutation" => Value::from(g.permutation(int("n") as usize)),
        "choice" => {
            let (pop, size) = (int("a") as usize, int("size") as usize);
            let drawn = if args["replace"].as_bool().unwrap() {
                g.choice(pop, size)
            } else {
                g.choice_without_replacement(pop, size)
            };
            Value::from(drawn)
        }
        other => panic!("rng.json has a call this test does not know: {other}"),
    }
}

/// What numpy drew: the values, or for `random` their bit patterns.
fn expected(call: &Value) -> Value {
    if call["method"] == "random" {
        call["bits"].clone()
    } else {
        call["values"].clone()
    }
}

#[test]
fn every_draw_matches_numpy() {
    let json = rng_json();
    let draws = json["draws"].as_array().unwrap();
    assert!(draws.len() > 20, "rng.json should hold many draws");
    for draw in draws {
        let mut g = Generator::new(draw["seed"].as_u64().unwrap());
        assert_eq!(call(&mut g, draw), expected(draw), "{draw}");
    }
}

#[test]
fn sequences_on_one_generator_match_numpy() {
    let json = rng_json();
    for sequence in json["sequences"].as_array().unwrap() {
        let mut g = Generator::new(sequence["seed"].as_u64().unwrap());
        for (i, recorded) in sequence["calls"].as_array().unwrap().iter().enumerate() {
            assert_eq!(call(&mut g, recorded), expected(recorded), "seed {} call {i}: {recorded}", sequence["seed"]);
        }
    }
}

#[test]
fn member0_seed_and_class_permutation_match_tabpfn() {
    let json = rng_json();
    let plans = json["member0_plans"].as_array().unwrap();
    assert!(
        plans.iter().any(|p| p["class_permutation"]
            .as_array()
            .is_some_and(|c| c.windows(2).any(|w| w[0].as_u64() > w[1].as_u64()))),
        "some plan should permute classes"
    );
    for plan in plans {
        let shift = match plan["class_shift"].as_str() {
            Some("shuffle") => ClassShift::Shuffle,
            Some("rotate") => ClassShift::Rotate,
            _ => ClassShift::None,
        };
        let n_classes = (plan["task"] == "cls").then(|| plan["n_classes"].as_u64().unwrap() as usize);
        let ours = member0_plan(
            plan["random_state"].as_u64().unwrap(),
            plan["n_estimators"].as_u64().unwrap() as usize,
            n_classes,
            shift,
        );
        assert_eq!(ours.seed, plan["seed"].as_u64().unwrap(), "{plan}");
        let permutation = ours.class_permutation.map(Value::from).unwrap_or(Value::Null);
        if n_classes.is_some() {
            assert_eq!(permutation, plan["class_permutation"], "{plan}");
        }
    }
}

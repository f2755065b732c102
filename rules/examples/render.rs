fn main() {
    let path = std::env::args().nth(1).expect("file");
    let text = std::fs::read_to_string(&path).expect("read");
    match portd_rules::parse_rules(&path, &text) {
        Ok(r) => {
            let plan = portd_rules::compile(
                "portd",
                1,
                &[portd_rules::OwnedSet { owner: "system".into(), forwards: r.forwards }],
            )
            .expect("compile");
            print!("{}", portd_rules::render::render(&plan));
        }
        Err(d) => {
            eprintln!("{d}");
            std::process::exit(1)
        }
    }
}

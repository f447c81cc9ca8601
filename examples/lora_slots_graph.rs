//! Writes a graph with LoRA slots as Kiln makes it at load
//! (`ModelOptions::lora_slots`), for profiling the side paths outside Kiln
//! (`tools/profile_lora_slots.py`).
//!
//!     cargo run --release --example lora_slots_graph -- IN.onnx OUT.onnx
//!
//! Write OUT beside IN: a graph with external weights names its data file
//! relative to its own folder, and the slotted graph keeps those references.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: lora_slots_graph IN.onnx OUT.onnx");
        std::process::exit(2);
    };
    let bytes = std::fs::read(input).unwrap_or_else(|e| {
        eprintln!("cannot read {input}: {e}");
        std::process::exit(1);
    });
    match kiln::model::lora::slotted_graph(&bytes) {
        Ok((Some(slotted), count)) => {
            if let Err(e) = std::fs::write(output, slotted) {
                eprintln!("cannot write {output}: {e}");
                std::process::exit(1);
            }
            println!("{count} LoRA slots: {output}");
        }
        Ok((None, _)) => {
            eprintln!("{input}: no layer takes a LoRA slot");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("{input}: {}", e.message());
            std::process::exit(1);
        }
    }
}

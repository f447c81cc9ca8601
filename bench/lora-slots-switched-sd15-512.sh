
# Run from the repository root; M and L are the export and a LoRA of tools/make_sd15_random.py and tools/make_sd15_lora.py.
B=target/release/examples/bench; M=${M:-/work/models/sd15-random}; L=${L:-/work/bench-tmp/sd15-loras/a.kohya.safetensors}
for round in 1 2; do
$B --model $M --size 512 --steps 2 --runs 1 --warmup 0 --json bench/lora-slots-switched-sd15-512-plain-$round.json
$B --model $M --size 512 --steps 2 --runs 1 --warmup 0 --lora-slots --json bench/lora-slots-switched-sd15-512-slots-$round.json
$B --model $M --size 512 --steps 2 --runs 1 --warmup 0 --lora-slots --lora $L:1.0 --json bench/lora-slots-switched-sd15-512-slots-fed-$round.json
$B --model $M --size 512 --steps 2 --runs 1 --warmup 0 --lora $L:1.0 --json bench/lora-slots-switched-sd15-512-merged-$round.json
done
echo DONE

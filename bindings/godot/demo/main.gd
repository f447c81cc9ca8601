extends Node3D
## Generates a seamless texture with Kiln and tiles it 4x4 on the ground plane.
## Previews appear on the plane while it generates; the main thread never waits.
##
## Headless check (saves the texture and quits; exit code 1 on failure):
##   godot --headless --path bindings/godot/demo -- --save=/tmp/kiln-tile.png

const PROMPT := "mossy cobblestone"

@onready var kiln: KilnGenerator = $Kiln
@onready var status: Label = $Status
@onready var material: StandardMaterial3D = ($Ground as MeshInstance3D).mesh.material
var save_path := ""
var job := 0


func _ready() -> void:
	for arg in OS.get_cmdline_user_args():
		if arg.begins_with("--save="):
			save_path = arg.trim_prefix("--save=")
	kiln.model_path = _model_dir()
	kiln.loading.connect(_on_loading)
	kiln.progress.connect(_on_progress)
	kiln.preview.connect(_on_preview)
	kiln.done.connect(_on_done)
	kiln.failed.connect(_on_failed)
	# "seamless": "xy" makes the texture wrap on both axes, so the 4x4 tiling shows no seams.
	job = kiln.generate(PROMPT, {"seamless": "xy", "seed": 7, "preview_interval": 2})
	status.text = "Loading the model..."


## KILN_MODEL_DIR, or the model bundled with the Kiln repository this demo lives in.
func _model_dir() -> String:
	var from_env := OS.get_environment("KILN_MODEL_DIR")
	if from_env != "":
		return from_env
	return ProjectSettings.globalize_path("res://").path_join("../../../models/kiln-tiny-textures").simplify_path()


func _on_loading(id: int, what: String, step: int, total: int) -> void:
	if id == job:
		status.text = "Loading the %s: %d%%" % [what, 100 * step / max(total, 1)]


func _on_progress(id: int, step: int, total: int) -> void:
	if id == job:
		status.text = "Generating '%s': step %d of %d" % [PROMPT, step, total]


func _on_preview(id: int, image: Image) -> void:
	if id == job:
		material.albedo_texture = ImageTexture.create_from_image(image)


func _on_done(id: int, texture: ImageTexture) -> void:
	if id != job:
		return
	material.albedo_texture = texture
	status.text = "'%s' (%dx%d), tiled 4x4" % [PROMPT, texture.get_width(), texture.get_height()]
	if save_path != "":
		var err := texture.get_image().save_png(save_path)
		print("saved %s (%s)" % [save_path, error_string(err)])
		get_tree().quit(0 if err == OK else 1)


func _on_failed(id: int, code: int, message: String) -> void:
	if id != job:
		return
	status.text = "Kiln failed (%d): %s" % [code, message]
	push_error(status.text)
	if save_path != "":
		get_tree().quit(1)

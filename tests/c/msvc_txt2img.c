/* txt2img linked the way an MSVC toolchain links Kiln: tools/windows_ci.sh
 * compiles it with clang for x86_64-pc-windows-msvc (the MSVC ABI), links it
 * with lld-link (link.exe's rules) against the Windows package's lib/kiln.lib,
 * runs it under Wine and compares its PNG with the MinGW-built txt2img.exe's.
 *
 * MSVC's C runtime and Windows SDK cannot be had off Windows, so the program
 * needs neither: kernel32 for output and its arguments, which come from the
 * environment (KILN_MODEL_DIR, KILN_PROMPT, KILN_OUT). Kiln's calls are the
 * ones examples/c/txt2img.c makes, with the same settings (seed 42, the
 * library's default steps). */
#include "kiln.h"

__declspec(dllimport) unsigned long __stdcall GetEnvironmentVariableA(const char *name, char *buffer, unsigned long size);
__declspec(dllimport) void *__stdcall GetStdHandle(unsigned long which);
__declspec(dllimport) int __stdcall WriteFile(void *file, const void *data, unsigned long size, unsigned long *written, void *overlapped);
__declspec(dllimport) __declspec(noreturn) void __stdcall ExitProcess(unsigned int code);

#define STD_OUTPUT_HANDLE ((unsigned long)-11)

/* Static, not on the stack: a frame over 4 KiB would call the CRT's __chkstk. */
static char model_dir[1024], prompt[512], out_path[1024], message[1024], ort_version[64];
static kiln_runtime_options runtime_options;
static kiln_generate_options options;

static void say(const char *text) {
    unsigned long length = 0, written = 0;
    while (text[length]) length++;
    WriteFile(GetStdHandle(STD_OUTPUT_HANDLE), text, length, &written, 0);
}

static void say_number(uint32_t n) {
    char digits[11];
    int i = 10;
    digits[i] = '\0';
    do {
        digits[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    say(digits + i);
}

static int env(const char *name, char *buffer, unsigned long size) {
    unsigned long n = GetEnvironmentVariableA(name, buffer, size);
    return n > 0 && n < size;
}

static unsigned fail(const char *what, kiln_status status) {
    kiln_last_error_message(message, sizeof message, 0);
    say("msvc_txt2img: ");
    say(what);
    say(" failed: ");
    say(kiln_status_name(status));
    say(": ");
    say(message);
    say("\n");
    return 1;
}

static unsigned run(void) {
    if (!env("KILN_MODEL_DIR", model_dir, sizeof model_dir) || !env("KILN_PROMPT", prompt, sizeof prompt)
        || !env("KILN_OUT", out_path, sizeof out_path)) {
        say("msvc_txt2img: set KILN_MODEL_DIR, KILN_PROMPT and KILN_OUT\n");
        return 2;
    }
    if (kiln_version() != KILN_VERSION) {
        say("msvc_txt2img: header " KILN_VERSION_STRING " does not match library ");
        say(kiln_version_string());
        say("\n");
        return 1;
    }
    kiln_runtime_options_init(&runtime_options);
    kiln_runtime *runtime = 0;
    kiln_status status = kiln_runtime_create(&runtime_options, &runtime);
    if (status != KILN_STATUS_OK) return fail("kiln_runtime_create", status);
    kiln_runtime_onnxruntime_version(runtime, ort_version, sizeof ort_version, 0);
    say("ONNX Runtime ");
    say(ort_version);
    say("\n");

    kiln_model *model = 0;
    status = kiln_model_load(runtime, model_dir, &model);
    if (status != KILN_STATUS_OK) {
        kiln_runtime_destroy(runtime);
        return fail("kiln_model_load", status);
    }
    kiln_generate_options_init(&options);
    options.prompt = prompt;
    options.seed = 42;
    kiln_image *image = 0;
    status = kiln_model_generate(model, &options, &image);
    if (status == KILN_STATUS_OK) {
        say("generated ");
        say_number(kiln_image_width(image));
        say("x");
        say_number(kiln_image_height(image));
        say(" through kiln.lib\n");
        status = kiln_image_write_png(image, out_path);
        if (status != KILN_STATUS_OK) fail("kiln_image_write_png", status);
    } else {
        fail("kiln_model_generate", status);
    }
    kiln_image_free(image);
    kiln_model_free(model);
    kiln_runtime_destroy(runtime);
    return status == KILN_STATUS_OK ? 0 : 1;
}

/* The entry point (lld-link /entry:start): no C runtime to start. */
void __stdcall start(void) {
    ExitProcess(run());
}

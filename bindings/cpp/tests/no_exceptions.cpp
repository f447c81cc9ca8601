// kiln.hpp needs no exceptions: this file is compiled with -fno-exceptions and only uses Result.
#include "kiln.hpp"

#ifdef KILN_CPP_EXCEPTIONS
#error "with -fno-exceptions the throwing layer must be compiled out"
#endif

int main() {
    kiln::Result<kiln::Runtime> rt = kiln::Runtime::create();
    if (!rt) return 1;
    kiln::Result<kiln::Model> missing = rt->load_model("/nonexistent/kiln-model");
    if (missing.status() != kiln::Status::model_not_found) return 1;
    kiln::Result<kiln::Upscaler> no_upscaler = rt->load_upscaler("/nonexistent/kiln-upscaler");
    if (no_upscaler.status() != kiln::Status::model_not_found || no_upscaler.error().message().empty()) return 1;
    const kiln::Upscaler empty;
    if (empty.scale().status() != kiln::Status::null_argument) return 1;
    if (empty.cancel().status() != kiln::Status::null_argument) return 1;
    if (empty.submit(kiln::Image()).status() != kiln::Status::null_argument) return 1;
    const kiln_generate_options o = kiln::defaults<kiln_generate_options>();
    if (kiln::Model().submit_make_tileable(o, 16).status() != kiln::Status::null_argument) return 1;
    if (kiln::Model().submit_extend_texture(o, 0, 0, 64, 0).status() != kiln::Status::null_argument) return 1;
    if (kiln::Model().submit_upscaled(o, empty).status() != kiln::Status::null_argument) return 1;
    kiln::Result<kiln::Job> no_folder = rt->submit_load_model("/nonexistent/kiln-model");
    if (no_folder.status() != kiln::Status::model_not_found || no_folder.error().message().empty()) return 1;
    if (kiln::Runtime().submit_load_model("/nonexistent/kiln-model").status() != kiln::Status::null_argument) return 1;
    if (kiln::Model().submit_with_loras({}).status() != kiln::Status::null_argument) return 1;
    if (kiln::Model().submit_with_adapters({}, {}).status() != kiln::Status::null_argument) return 1;
    if (kiln::Model().submit_seamless(kiln::Seamless::xy).status() != kiln::Status::null_argument) return 1;
    if (kiln::Job().model().status() != kiln::Status::invalid_handle) return 1;
    kiln::Result<kiln::Job> no_graph = rt->submit_load_upscaler("/nonexistent/kiln-upscaler");
    if (no_graph.status() != kiln::Status::model_not_found || no_graph.error().message().empty()) return 1;
    if (kiln::Runtime().submit_load_upscaler("/nonexistent/kiln-upscaler").status() != kiln::Status::null_argument) return 1;
    if (kiln::Job().upscaler().status() != kiln::Status::invalid_handle) return 1;
    return empty.upscale(kiln::Image()).status() == kiln::Status::null_argument ? 0 : 1;
}

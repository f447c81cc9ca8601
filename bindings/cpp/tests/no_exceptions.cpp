// kiln.hpp needs no exceptions: this file is compiled with -fno-exceptions and only uses Result.
#include "kiln.hpp"

#ifdef KILN_CPP_EXCEPTIONS
#error "with -fno-exceptions the throwing layer must be compiled out"
#endif

int main() {
    kiln::Result<kiln::Runtime> rt = kiln::Runtime::create();
    if (!rt) return 1;
    kiln::Result<kiln::Model> missing = rt->load_model("/nonexistent/kiln-model");
    return missing.status() == kiln::Status::model_not_found ? 0 : 1;
}

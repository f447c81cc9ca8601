// txt2img: the smallest complete use of Kiln from C#, step for step what
// examples/c/txt2img.c does.
//
//   mono Txt2Img.exe MODEL_DIR PROMPT OUT.png
//
// Loads ONNX Runtime (searched: ORT_DYLIB_PATH, beside libkiln, the project's fetched
// copy), loads the model, generates one image at the model's native size with default
// settings and seed 42, and writes it as a PNG. Every failure prints Kiln's own message.
// Console program for Mono, not part of the Unity package: compiled to nothing in Unity.
#if !UNITY_5_3_OR_NEWER
using System;
using Kiln;
using Kiln.Interop;

static class Txt2Img
{
    static int Main(string[] args)
    {
        if (args.Length != 3)
        {
            Console.Error.WriteLine("usage: txt2img MODEL_DIR PROMPT OUT.png");
            return 2;
        }
        if (KilnRuntime.LibraryVersion != KilnNative.HeaderVersion)
        {
            Console.Error.WriteLine("txt2img: binding " + KilnNative.HeaderVersionString + " does not match library " + KilnRuntime.LibraryVersionString);
            return 1;
        }
        string step = "kiln_runtime_create";
        try
        {
            using (var runtime = new KilnRuntime())
            {
                Console.WriteLine("ONNX Runtime " + runtime.OnnxRuntimeVersion);
                step = "kiln_model_load";
                using (var model = KilnModel.Load(runtime, args[0]))
                {
                    step = "kiln_model_generate";
                    var settings = new KilnGenerateSettings { Prompt = args[1], Seed = 42 };
                    using (KilnImage image = model.Generate(settings))
                    {
                        Console.WriteLine("generated " + image.Width + "x" + image.Height);
                        step = "kiln_image_write_png";
                        image.WritePng(args[2]);
                    }
                }
            }
        }
        catch (KilnException e)
        {
            Console.Error.WriteLine("txt2img: " + step + " failed: " + e.Message);
            return 1;
        }
        return 0;
    }
}
#endif

// A stand-in for the handful of UnityEngine APIs the Unity-only files use, with Unity's
// signatures, so build.sh can type-check Runtime/Unity and Samples~ under
// UNITY_5_3_OR_NEWER without Unity. It proves they compile against these signatures,
// not that they run in Unity. Never shipped. Just enough of it works for
// tests/UnitySampleRunner.cs to run the sample under Mono: a texture keeps the bytes
// it was given, a component finds the components given to it (the Stub* members,
// which Unity does not have), and Debug writes to the console.
#if !UNITY_5_3_OR_NEWER
namespace UnityEngine
{
    public enum TextureFormat { RGBA32 = 4 }
    public enum TextureWrapMode { Repeat = 0, Clamp = 1 }
    public class Object { }
    public class Texture : Object
    {
        public virtual int width { get { return 0; } }
        public virtual int height { get { return 0; } }
        public TextureWrapMode wrapMode { get; set; }
    }
    public sealed class Texture2D : Texture
    {
        readonly int w, h;
        public Texture2D(int width, int height, TextureFormat textureFormat, bool mipChain, bool linear) { w = width; h = height; }
        public override int width { get { return w; } }
        public override int height { get { return h; } }
        public TextureFormat format { get { return TextureFormat.RGBA32; } }
        public void LoadRawTextureData(byte[] data) { StubData = (byte[])data.Clone(); }
        public void Apply() { }
        /// <summary>What LoadRawTextureData was given (rows bottom-up, as Unity stores them).</summary>
        public byte[] StubData;
    }
    public class Material : Object { public Texture mainTexture { get; set; } }
    public class Component : Object
    {
        readonly System.Collections.Generic.List<object> stubComponents = new System.Collections.Generic.List<object>();
        public T GetComponent<T>()
        {
            foreach (object c in stubComponents) if (c is T) return (T)c;
            return default(T);
        }
        /// <summary>Makes GetComponent find <c>c</c> (Unity's GameObject does this).</summary>
        public void StubAddComponent(object c) { stubComponents.Add(c); }
    }
    public class Renderer : Component { public Material material { get; set; } }
    public class Behaviour : Component { public bool enabled { get; set; } }
    public class MonoBehaviour : Behaviour { }
    public static class Debug
    {
        public static void Log(object message) { System.Console.WriteLine("Debug.Log: " + message); }
        public static void LogError(object message) { System.Console.WriteLine("Debug.LogError: " + message); }
    }
    public static class Application { public static string streamingAssetsPath { get { return ""; } } }
}

namespace UnityEditor
{
    [System.AttributeUsage(System.AttributeTargets.Class)]
    public sealed class InitializeOnLoadAttribute : System.Attribute { }
    public static class AssemblyReloadEvents
    {
        public delegate void AssemblyReloadCallback();
        public static event AssemblyReloadCallback beforeAssemblyReload;
        internal static void Raise() { if (beforeAssemblyReload != null) beforeAssemblyReload(); }
    }
}

namespace AOT
{
    // Unity's own copy, in UnityEngine.dll.
    [System.AttributeUsage(System.AttributeTargets.Method)]
    public sealed class MonoPInvokeCallbackAttribute : System.Attribute
    {
        public readonly System.Type DelegateType;
        public MonoPInvokeCallbackAttribute(System.Type type) { DelegateType = type; }
    }
}
#endif

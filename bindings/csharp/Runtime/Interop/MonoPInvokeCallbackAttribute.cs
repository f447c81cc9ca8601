// IL2CPP (and Mono's full AOT) can only hand native code a function pointer to a static
// method that carries [MonoPInvokeCallback(typeof(TheDelegate))]. Unity ships the
// attribute as AOT.MonoPInvokeCallbackAttribute; outside Unity (the Mono tests) the
// binding declares its own with the same name, which is all the AOT compilers look at.
#if !UNITY_5_3_OR_NEWER
using System;

namespace AOT
{
    /// <summary>Marks a static method that native code calls through a delegate of <c>type</c>.</summary>
    [AttributeUsage(AttributeTargets.Method)]
    public sealed class MonoPInvokeCallbackAttribute : Attribute
    {
        /// <summary>The delegate type native code calls it as.</summary>
        public readonly Type DelegateType;
        /// <summary>Declares the delegate type.</summary>
        public MonoPInvokeCallbackAttribute(Type type) { DelegateType = type; }
    }
}
#endif

// Helper.swift — the helper functions a program can call, by the kernel's IDs.
//
// Mirrors: include/uapi/linux/bpf.h (___BPF_FUNC_MAPPER: the IDs are ABI and never
// change). Only the helpers the lab implements are listed; their semantics are in the
// interpreter (Sources/BPFPrograms/interpreter.c).

public enum HelperID: Int32, Sendable, CaseIterable {
    case mapLookupElem = 1
    case mapUpdateElem = 2
    case mapDeleteElem = 3
    case ktimeGetNs = 5
    case tracePrintk = 6
    case getPrandomU32 = 7
    case getSmpProcessorID = 8
    case tailCall = 12
    case redirect = 23
    case xdpAdjustHead = 44
    case xdpAdjustMeta = 54
    case xdpAdjustTail = 65
    case ktimeGetBootNs = 125
    case getAttachCookie = 174
    case getFuncRet = 184

    /// The kernel's name, as `call bpf_tail_call#12` prints it.
    public var name: String {
        switch self {
        case .mapLookupElem: return "bpf_map_lookup_elem"
        case .mapUpdateElem: return "bpf_map_update_elem"
        case .mapDeleteElem: return "bpf_map_delete_elem"
        case .ktimeGetNs: return "bpf_ktime_get_ns"
        case .tracePrintk: return "bpf_trace_printk"
        case .getPrandomU32: return "bpf_get_prandom_u32"
        case .getSmpProcessorID: return "bpf_get_smp_processor_id"
        case .tailCall: return "bpf_tail_call"
        case .redirect: return "bpf_redirect"
        case .xdpAdjustHead: return "bpf_xdp_adjust_head"
        case .xdpAdjustMeta: return "bpf_xdp_adjust_meta"
        case .xdpAdjustTail: return "bpf_xdp_adjust_tail"
        case .ktimeGetBootNs: return "bpf_ktime_get_boot_ns"
        case .getAttachCookie: return "bpf_get_attach_cookie"
        case .getFuncRet: return "bpf_get_func_ret"
        }
    }

    /// What each argument register must hold (the verifier's bpf_func_proto arg types, as
    /// far as the lab checks them at run time).
    public var arguments: [HelperArgument] {
        switch self {
        case .mapLookupElem, .mapDeleteElem: return [.map, .key]
        case .mapUpdateElem: return [.map, .key, .value, .anything]
        case .ktimeGetNs, .getPrandomU32, .getSmpProcessorID, .ktimeGetBootNs: return []
        case .tracePrintk: return [.memory, .size, .anything, .anything, .anything]
        case .tailCall: return [.context, .map, .anything]
        case .redirect: return [.anything, .anything]
        case .xdpAdjustHead, .xdpAdjustMeta, .xdpAdjustTail: return [.context, .anything]
        case .getAttachCookie: return [.context]
        case .getFuncRet: return [.context, .memory]
        }
    }
}

/// A helper argument's kind (enum bpf_arg_type, in brief).
public enum HelperArgument: Sendable {
    case map, key, value, context, memory, size, anything
}

/// The lab's kfuncs (call with src_reg = 2), by the lab's own IDs.
public enum KfuncID: Int32, Sendable, CaseIterable {
    /// bpf_static_key_set(key_id, on): flips the program's static key `key_id` (seed 000).
    case staticKeySet = 1
    /// bpf_lab_counter_add(slot): the kernel's named counter `slot` += 1 (a step program's
    /// count step, compiled to instructions).
    case counterAdd = 2

    public var name: String {
        switch self {
        case .staticKeySet: return "bpf_static_key_set"
        case .counterAdd: return "bpf_lab_counter_add"
        }
    }
}

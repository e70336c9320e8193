import Foundation

/// Why the gateway refused or failed a request; each case has its HTTP status and is sent as
/// OpenAI's error object `{"error": {"message", "type", "code"}}`, the message saying what to fix.
public enum GatewayError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The body is not JSON (or nests too deep).
    case malformedJSON(String)
    /// A field is missing, of the wrong kind or out of range.
    case invalidRequest(String)
    /// A content part is malformed (unknown type, bad URL, bad base64…); `part` names it.
    case invalidPart(part: String, reason: String)
    case unauthorized
    case notFound(String)
    case methodNotAllowed(String)
    case tooLarge(limit: Int)
    case unsupportedContentType(String)
    /// The pipeline could not decode a part's media.
    case undecodableMedia(part: String, reason: String)
    case busy(limit: Int)
    case unavailable(String)
    case timeout(String)
    case pipeline(String)

    public var status: Int {
        switch self {
        case .malformedJSON, .invalidRequest, .invalidPart: return 400
        case .unauthorized: return 401
        case .notFound: return 404
        case .methodNotAllowed: return 405
        case .tooLarge: return 413
        case .unsupportedContentType, .undecodableMedia: return 415
        case .busy: return 429
        case .unavailable: return 503
        case .timeout: return 504
        case .pipeline: return 500
        }
    }

    /// OpenAI's `type`.
    public var type: String {
        switch self {
        case .malformedJSON, .invalidRequest, .invalidPart, .tooLarge, .unsupportedContentType, .undecodableMedia, .methodNotAllowed:
            return "invalid_request_error"
        case .unauthorized: return "authentication_error"
        case .notFound: return "not_found_error"
        case .busy: return "rate_limit_error"
        case .unavailable, .timeout, .pipeline: return "server_error"
        }
    }

    /// A stable machine-readable `code`.
    public var code: String {
        switch self {
        case .malformedJSON: return "invalid_json"
        case .invalidRequest: return "invalid_request"
        case .invalidPart: return "invalid_content_part"
        case .unauthorized: return "invalid_api_key"
        case .notFound: return "not_found"
        case .methodNotAllowed: return "method_not_allowed"
        case .tooLarge: return "request_too_large"
        case .unsupportedContentType: return "unsupported_content_type"
        case .undecodableMedia: return "undecodable_media"
        case .busy: return "server_busy"
        case .unavailable: return "unavailable"
        case .timeout: return "timeout"
        case .pipeline: return "pipeline_error"
        }
    }

    public var description: String {
        switch self {
        case .malformedJSON(let why): return "the body is not valid JSON: \(why)"
        case .invalidRequest(let why): return why
        case .invalidPart(let part, let why): return "\(part): \(why)"
        case .unauthorized: return "missing or unknown API key: send 'Authorization: Bearer <key>' with a key from the pipeline file's \"api_keys\""
        case .notFound(let path): return "no such endpoint \(path); the gateway serves POST /v1/chat/completions, GET /v1/models and GET /health"
        case .methodNotAllowed(let what): return what
        case .tooLarge(let limit): return "the request body is larger than \(limit) bytes (the gateway's \"max_body\"); send smaller media or raise the limit"
        case .unsupportedContentType(let got): return "Content-Type must be application/json, got '\(got)'"
        case .undecodableMedia(let part, let why): return "\(part): the pipeline cannot decode this media: \(why)"
        case .busy(let limit): return "the gateway is busy: \(limit) requests are generating (its \"max_requests\"); retry shortly"
        case .unavailable(let why): return "the pipeline is unavailable: \(why)"
        case .timeout(let why): return "timed out: \(why)"
        case .pipeline(let why): return "the pipeline failed: \(why)"
        }
    }

    /// The error object as JSON bytes.
    public var body: Data {
        struct Inner: Encodable { var message: String; var type: String; var code: String }
        struct Outer: Encodable { var error: Inner }
        return (try? JSONEncoder().encode(Outer(error: Inner(message: description, type: type, code: code)))) ?? Data()
    }
}

package flinkrec;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A JSON decoder that accepts and refuses exactly what {@code udfs.events} accepts and refuses: CPython 3.11's
 * {@code json.JSONDecoder} (strict mode, its C scanner) with {@code parse_constant} rejecting {@code NaN},
 * {@code Infinity} and {@code -Infinity}; the error messages are the ones Python gives.
 *
 * <p>Values: {@code null}, {@link Boolean}, {@link Long} (an integer that fits), {@link BigInteger} (one that does
 * not), {@link Double} (a number with a fraction or an exponent; {@code 1e400} is infinite, as in Python),
 * {@link String}, {@link List} and {@link Map} (a {@link LinkedHashMap}: a repeated key keeps its first place and
 * its last value, as a Python dict).
 *
 * <p>Python's decoder recurses once per nesting level and fails with RecursionError at a depth that depends on
 * its interpreter's stack; this one refuses nesting deeper than {@link #MAX_DEPTH} with the same message. A valid
 * event has no nesting, so the accept/reject decision is the same either way.
 */
final class PyJson {

    /** A record refused while decoding: the reason code of {@code udfs.events} and its message. */
    static final class Failure extends Exception {
        private static final long serialVersionUID = 1L;
        final String reason;

        Failure(String reason, String message) {
            super(message, null, false, false);  // no stack trace: a refused record is data, not a bug
            this.reason = reason;
        }
    }

    /** The deepest nesting of arrays and objects decoded. */
    static final int MAX_DEPTH = 900;
    /** CPython's limit of digits in an integer literal (sys.get_int_max_str_digits()). */
    static final int MAX_INT_DIGITS = 4300;

    private final String s;
    private final int len;
    private int depth;
    /** The end of the last value scanned. */
    private int next;

    private PyJson(String s) {
        this.s = s;
        this.len = s.length();
    }

    /** Decode a whole text (white space around allowed), as {@code json.JSONDecoder.decode}. */
    static Object decode(String text) throws Failure {
        PyJson p = new PyJson(text);
        Object value = p.scan(p.skip(0));
        int end = p.skip(p.next);
        if (end != p.len) {
            throw p.error("Extra data", end);
        }
        return value;
    }

    private int skip(int idx) {
        while (idx < len) {
            char c = s.charAt(idx);
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                break;
            }
            idx++;
        }
        return idx;
    }

    private Failure error(String what, int charIndex) {
        int pos = s.codePointCount(0, charIndex);
        int line = 1;
        int lastNewline = -1;
        for (int i = 0; i < charIndex; i++) {
            if (s.charAt(i) == '\n') {
                line++;
                lastNewline = i;
            }
        }
        int column = lastNewline < 0 ? pos + 1 : pos - s.codePointCount(0, lastNewline);
        return new Failure("bad_json",
                "message is not JSON: " + what + ": line " + line + " column " + column + " (char " + pos + ")");
    }

    private Failure expectingValue(int idx) {
        return error("Expecting value", idx);
    }

    private Object scan(int idx) throws Failure {
        if (idx >= len) {
            throw expectingValue(idx);
        }
        char c = s.charAt(idx);
        switch (c) {
            case '"':
                return string(idx + 1);
            case '{':
                enter("object");
                Map<String, Object> obj = object(idx + 1);
                depth--;
                return obj;
            case '[':
                enter("array");
                List<Object> list = array(idx + 1);
                depth--;
                return list;
            case 'n':
                if (s.startsWith("null", idx)) {
                    next = idx + 4;
                    return null;
                }
                break;
            case 't':
                if (s.startsWith("true", idx)) {
                    next = idx + 4;
                    return Boolean.TRUE;
                }
                break;
            case 'f':
                if (s.startsWith("false", idx)) {
                    next = idx + 5;
                    return Boolean.FALSE;
                }
                break;
            case 'N':
                if (s.startsWith("NaN", idx)) {
                    throw constant("NaN");
                }
                break;
            case 'I':
                if (s.startsWith("Infinity", idx)) {
                    throw constant("Infinity");
                }
                break;
            case '-':
                if (s.startsWith("-Infinity", idx)) {
                    throw constant("-Infinity");
                }
                break;
            default:
                break;
        }
        return number(idx);
    }

    private static Failure constant(String name) {
        return new Failure("bad_number", "non-finite number " + name + " is not allowed");
    }

    private void enter(String what) throws Failure {
        if (++depth > MAX_DEPTH) {
            throw new Failure("bad_json", "message is not JSON: maximum recursion depth exceeded while decoding a JSON "
                    + what + " from a unicode string");
        }
    }

    private static boolean digit(char c) {
        return c >= '0' && c <= '9';
    }

    private Object number(int start) throws Failure {
        int idx = start;
        int end = len - 1;
        if (s.charAt(idx) == '-') {
            idx++;
            if (idx > end) {
                throw expectingValue(start);
            }
        }
        char c = s.charAt(idx);
        if (c >= '1' && c <= '9') {
            idx++;
            while (idx <= end && digit(s.charAt(idx))) {
                idx++;
            }
        } else if (c == '0') {
            idx++;
        } else {
            throw expectingValue(start);
        }
        boolean isFloat = false;
        if (idx < end && s.charAt(idx) == '.' && digit(s.charAt(idx + 1))) {
            isFloat = true;
            idx += 2;
            while (idx <= end && digit(s.charAt(idx))) {
                idx++;
            }
        }
        if (idx < end && (s.charAt(idx) == 'e' || s.charAt(idx) == 'E')) {
            int eStart = idx;
            idx++;
            if (idx < end && (s.charAt(idx) == '-' || s.charAt(idx) == '+')) {
                idx++;
            }
            while (idx <= end && digit(s.charAt(idx))) {
                idx++;
            }
            if (digit(s.charAt(idx - 1))) {
                isFloat = true;
            } else {
                idx = eStart;
            }
        }
        next = idx;
        String text = s.substring(start, idx);
        if (isFloat) {
            return Double.parseDouble(text);
        }
        int digits = text.charAt(0) == '-' ? text.length() - 1 : text.length();
        if (digits <= 18) {
            return Long.parseLong(text);
        }
        if (digits > MAX_INT_DIGITS) {
            throw new Failure("bad_json", "message is not JSON: Exceeds the limit (" + MAX_INT_DIGITS
                    + " digits) for integer string conversion: value has " + digits
                    + " digits; use sys.set_int_max_str_digits() to increase the limit");
        }
        BigInteger big = new BigInteger(text);
        return big.bitLength() < 64 ? (Object) big.longValue() : big;
    }

    private static int hex(char c) {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        if (c >= 'a' && c <= 'f') {
            return c - 'a' + 10;
        }
        if (c >= 'A' && c <= 'F') {
            return c - 'A' + 10;
        }
        return -1;
    }

    /** The string whose opening quote is at {@code end - 1}; sets {@link #next} past its closing quote. */
    private String string(int end) throws Failure {
        int begin = end - 1;
        StringBuilder chunks = null;
        while (true) {
            int at = end;
            char c = 0;
            for (; at < len; at++) {
                c = s.charAt(at);
                if (c == '"' || c == '\\') {
                    break;
                }
                if (c <= 0x1f) {
                    throw error("Invalid control character at", at);
                }
            }
            if (at == len) {
                throw error("Unterminated string starting at", begin);
            }
            if (c == '"' && chunks == null) {
                next = at + 1;
                return s.substring(end, at);
            }
            if (chunks == null) {
                chunks = new StringBuilder(at - end + 16);
            }
            chunks.append(s, end, at);
            at++;
            if (c == '"') {
                next = at;
                return chunks.toString();
            }
            if (at == len) {
                throw error("Unterminated string starting at", begin);
            }
            c = s.charAt(at);
            if (c != 'u') {
                end = at + 1;
                switch (c) {
                    case '"':
                    case '\\':
                    case '/':
                        break;
                    case 'b':
                        c = '\b';
                        break;
                    case 'f':
                        c = '\f';
                        break;
                    case 'n':
                        c = '\n';
                        break;
                    case 'r':
                        c = '\r';
                        break;
                    case 't':
                        c = '\t';
                        break;
                    default:
                        throw error("Invalid \\escape", end - 2);
                }
                chunks.append(c);
            } else {
                at++;
                end = at + 4;
                if (end >= len) {
                    throw error("Invalid \\uXXXX escape", at - 1);
                }
                int code = 0;
                for (; at < end; at++) {
                    int d = hex(s.charAt(at));
                    if (d < 0) {
                        throw error("Invalid \\uXXXX escape", end - 5);
                    }
                    code = code << 4 | d;
                }
                // a high surrogate escape and a low one make one character: in a Java string, the same two chars
                chunks.append((char) code);
            }
        }
    }

    private Map<String, Object> object(int idx) throws Failure {
        Map<String, Object> obj = new LinkedHashMap<>();
        idx = skip(idx);
        if (idx >= len || s.charAt(idx) != '}') {
            while (true) {
                if (idx >= len || s.charAt(idx) != '"') {
                    throw error("Expecting property name enclosed in double quotes", idx);
                }
                String key = string(idx + 1);
                idx = skip(next);
                if (idx >= len || s.charAt(idx) != ':') {
                    throw error("Expecting ':' delimiter", idx);
                }
                idx = skip(idx + 1);
                Object value = scan(idx);
                obj.put(key, value);
                idx = skip(next);
                if (idx < len && s.charAt(idx) == '}') {
                    break;
                }
                if (idx >= len || s.charAt(idx) != ',') {
                    throw error("Expecting ',' delimiter", idx);
                }
                idx = skip(idx + 1);
            }
        }
        next = idx + 1;
        return obj;
    }

    private List<Object> array(int idx) throws Failure {
        List<Object> list = new ArrayList<>();
        idx = skip(idx);
        if (idx >= len || s.charAt(idx) != ']') {
            while (true) {
                list.add(scan(idx));
                idx = skip(next);
                if (idx < len && s.charAt(idx) == ']') {
                    break;
                }
                if (idx >= len || s.charAt(idx) != ',') {
                    throw error("Expecting ',' delimiter", idx);
                }
                idx = skip(idx + 1);
            }
        }
        next = idx + 1;
        return list;
    }
}

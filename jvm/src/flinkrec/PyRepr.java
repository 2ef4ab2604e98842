package flinkrec;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.MathContext;
import java.math.RoundingMode;
import java.util.List;
import java.util.Map;

/**
 * Python's {@code repr}, {@code str} and {@code type(x).__name__} of decoded JSON values ({@link PyJson}), and the
 * {@code :g} format of a float: the messages of {@code udfs.events} quote values this way.
 */
final class PyRepr {

    private PyRepr() {}

    static String typeName(Object value) {
        if (value == null) {
            return "NoneType";
        }
        if (value instanceof Boolean) {
            return "bool";
        }
        if (value instanceof Long || value instanceof BigInteger) {
            return "int";
        }
        if (value instanceof Double) {
            return "float";
        }
        if (value instanceof String) {
            return "str";
        }
        if (value instanceof List) {
            return "list";
        }
        return "dict";
    }

    /** {@code repr(value)} cut to its first {@code limit} characters (code points), as {@code f"{value!r:.80}"}. */
    static String repr(Object value, int limit) {
        StringBuilder out = new StringBuilder();
        append(out, value, 2 * limit + 16);
        return head(out.toString(), limit);
    }

    static String repr(Object value) {
        StringBuilder out = new StringBuilder();
        append(out, value, Integer.MAX_VALUE);
        return out.toString();
    }

    /** The first {@code limit} code points of a string. */
    static String head(String text, int limit) {
        if (text.length() <= limit) {
            return text;
        }
        int end = text.offsetByCodePoints(0, Math.min(limit, text.codePointCount(0, text.length())));
        return text.substring(0, end);
    }

    /** Append the repr of a value, stopping once {@code out} holds more than {@code budget} chars. */
    private static void append(StringBuilder out, Object value, int budget) {
        if (out.length() > budget) {
            return;
        }
        if (value == null) {
            out.append("None");
        } else if (value instanceof Boolean) {
            out.append((Boolean) value ? "True" : "False");
        } else if (value instanceof Double) {
            out.append(floatRepr((Double) value));
        } else if (value instanceof String) {
            string(out, (String) value, budget);
        } else if (value instanceof List) {
            out.append('[');
            boolean first = true;
            for (Object item : (List<?>) value) {
                if (out.length() > budget) {
                    return;
                }
                if (!first) {
                    out.append(", ");
                }
                first = false;
                append(out, item, budget);
            }
            out.append(']');
        } else if (value instanceof Map) {
            out.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
                if (out.length() > budget) {
                    return;
                }
                if (!first) {
                    out.append(", ");
                }
                first = false;
                append(out, e.getKey(), budget);
                out.append(": ");
                append(out, e.getValue(), budget);
            }
            out.append('}');
        } else {
            out.append(value);  // Long, BigInteger: the decimal digits
        }
    }

    /** Whether Python's {@code str.isprintable} holds for a code point (Java's Unicode tables). */
    static boolean printable(int cp) {
        if (cp == ' ') {
            return true;
        }
        switch (Character.getType(cp)) {
            case Character.CONTROL:
            case Character.FORMAT:
            case Character.SURROGATE:
            case Character.PRIVATE_USE:
            case Character.UNASSIGNED:
            case Character.LINE_SEPARATOR:
            case Character.PARAGRAPH_SEPARATOR:
            case Character.SPACE_SEPARATOR:
                return false;
            default:
                return true;
        }
    }

    /** Python's string repr: single quotes unless the text has one and no double quote; escapes as Python's. */
    private static void string(StringBuilder out, String text, int budget) {
        char quote = text.indexOf('\'') >= 0 && text.indexOf('"') < 0 ? '"' : '\'';
        out.append(quote);
        for (int i = 0; i < text.length(); ) {
            if (out.length() > budget) {
                return;
            }
            int cp = text.codePointAt(i);
            i += Character.charCount(cp);
            if (cp == quote || cp == '\\') {
                out.append('\\').appendCodePoint(cp);
            } else if (cp == '\t') {
                out.append("\\t");
            } else if (cp == '\n') {
                out.append("\\n");
            } else if (cp == '\r') {
                out.append("\\r");
            } else if (cp < ' ' || cp == 0x7f) {
                out.append(String.format("\\x%02x", cp));
            } else if (cp < 0x7f || printable(cp)) {
                out.appendCodePoint(cp);
            } else if (cp <= 0xff) {
                out.append(String.format("\\x%02x", cp));
            } else if (cp <= 0xffff) {
                out.append(String.format("\\u%04x", cp));
            } else {
                out.append(String.format("\\U%08x", cp));
            }
        }
        out.append(quote);
    }

    /** Python's {@code repr(float)}: the shortest digits that read back to the value, Python's layout. */
    static String floatRepr(double value) {
        if (Double.isNaN(value)) {
            return "nan";
        }
        if (Double.isInfinite(value)) {
            return value > 0 ? "inf" : "-inf";
        }
        if (value == 0) {
            return 1 / value < 0 ? "-0.0" : "0.0";
        }
        BigDecimal exact = new BigDecimal(value);
        BigDecimal shortest = exact;
        for (int p = 1; p <= 17; p++) {
            BigDecimal candidate = exact.round(new MathContext(p, RoundingMode.HALF_EVEN));
            if (candidate.doubleValue() == value) {
                shortest = candidate;
                break;
            }
        }
        return layout(shortest.stripTrailingZeros(), 16, true);
    }

    /** Python's {@code format(value, "g")}: 6 significant digits. */
    static String formatG(double value) {
        if (Double.isNaN(value) || Double.isInfinite(value)) {
            return floatRepr(value);
        }
        if (value == 0) {
            return 1 / value < 0 ? "-0" : "0";
        }
        BigDecimal rounded = new BigDecimal(value).round(new MathContext(6, RoundingMode.HALF_EVEN));
        return layout(rounded.stripTrailingZeros(), 6, false);
    }

    /**
     * Digits in fixed notation when the decimal exponent is in -4..{@code maxExp}-1, else scientific ({@code 1e+16});
     * {@code pointZero}: an integral fixed value ends in ".0" (repr), else not (format g).
     */
    private static String layout(BigDecimal d, int maxExp, boolean pointZero) {
        String sign = d.signum() < 0 ? "-" : "";
        String digits = d.unscaledValue().abs().toString();
        int exp = digits.length() - 1 - d.scale();  // the exponent of the first digit
        if (exp >= -4 && exp < maxExp) {
            String plain = d.abs().toPlainString();
            if (pointZero && plain.indexOf('.') < 0) {
                plain += ".0";
            }
            return sign + plain;
        }
        String mantissa = digits.length() == 1 ? digits : digits.charAt(0) + "." + digits.substring(1);
        String e = String.valueOf(Math.abs(exp));
        return sign + mantissa + "e" + (exp < 0 ? "-" : "+") + (e.length() < 2 ? "0" + e : e);
    }
}

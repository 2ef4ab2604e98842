package flinkrec;

import java.io.Serializable;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;

/**
 * The event schema of {@code udfs.events} (the specification: {@code parse_event}, {@code validate_event},
 * {@code id_problem}, {@code Limits}) and the source payloads of {@code udfs.dlq.parse_source_event}, on the JVM:
 * for every payload the same decision, the same reason code, the same normalised fields and the same message
 * ({@code tests/test_event_check.py} compares both on a corpus and generated records).
 */
public final class EventCheck implements Serializable {
    private static final long serialVersionUID = 1L;

    /** {@code udfs.events.EVENT_TYPES}: a type's code is its index. */
    static final String[] TYPES = {"rate", "view", "click", "cart", "purchase", "dislike", "hide"};
    /** {@code udfs.events.NEGATIVE_TYPES} start here; their weight without a value is NEGATIVE_WEIGHT. */
    static final int FIRST_NEGATIVE = 5;
    static final double NEGATIVE_WEIGHT = 1.0;
    static final String[] REQUIRED = {"event_id", "user_id", "item_id", "type", "ts"};
    static final List<String> FIELDS = List.of("event_id", "user_id", "item_id", "type", "value", "ts");
    private static final BigInteger MIN_LONG = BigInteger.valueOf(Long.MIN_VALUE);
    private static final BigInteger MAX_LONG = BigInteger.valueOf(Long.MAX_VALUE);

    private final double minRating;
    private final double maxRating;
    /** By type code; [0] (rate) unused. */
    private final double[] weights;
    private final int maxIdLength;
    private final int maxMessageBytes;
    private final long minTs;
    private final long maxTs;

    /**
     * The limits of {@code udfs.events.Limits}; {@code weights}: {@code "view=1.0,click=2.0,..."}, a weight for each
     * type but rate (dislike and hide: NEGATIVE_WEIGHT unless given).
     */
    public EventCheck(double minRating, double maxRating, String weights, int maxIdLength, int maxMessageBytes,
            long minTs, long maxTs) {
        this.minRating = minRating;
        this.maxRating = maxRating;
        this.weights = new double[TYPES.length];
        java.util.Arrays.fill(this.weights, Double.NaN);
        java.util.Arrays.fill(this.weights, FIRST_NEGATIVE, TYPES.length, NEGATIVE_WEIGHT);
        for (String part : weights.split(",")) {
            String[] kv = part.split("=", 2);
            int code = List.of(TYPES).indexOf(kv[0].trim());
            if (kv.length != 2 || code < 1) {
                throw new IllegalArgumentException("weights " + weights + ": '" + part + "' is not type=weight of a "
                        + "type other than rate");
            }
            this.weights[code] = Double.parseDouble(kv[1]);
        }
        for (int code = 1; code < TYPES.length; code++) {
            if (Double.isNaN(this.weights[code])) {
                throw new IllegalArgumentException("weights " + weights + " have no weight for " + TYPES[code]);
            }
        }
        this.maxIdLength = maxIdLength;
        this.maxMessageBytes = maxMessageBytes;
        this.minTs = minTs;
        this.maxTs = maxTs;
    }

    /** Equal limits: the same decision for every payload. */
    @Override
    public boolean equals(Object other) {
        if (!(other instanceof EventCheck)) {
            return false;
        }
        EventCheck o = (EventCheck) other;
        return Double.compare(minRating, o.minRating) == 0 && Double.compare(maxRating, o.maxRating) == 0
                && java.util.Arrays.equals(weights, o.weights) && maxIdLength == o.maxIdLength
                && maxMessageBytes == o.maxMessageBytes && minTs == o.minTs && maxTs == o.maxTs;
    }

    @Override
    public int hashCode() {
        return java.util.Objects.hash(minRating, maxRating, java.util.Arrays.hashCode(weights), maxIdLength,
                maxMessageBytes, minTs, maxTs);
    }

    /**
     * A source payload ({@link SourceRows}: text, U+0000 + Base64 of bytes, or null) -> a {@link FrontEvent}: the
     * event, or the reason and message of {@code udfs.dlq.parse_source_event}; neither shard, payload, origin
     * nor watermark is set.
     */
    public FrontEvent check(String payload) {
        if (payload == null) {
            return FrontEvent.refused("null_value", "the record has no value (a tombstone)");
        }
        String text = payload;
        if (!payload.isEmpty() && payload.charAt(0) == SourceRows.BINARY) {
            byte[] data = Base64.getDecoder().decode(payload.substring(1));
            if (data.length > maxMessageBytes) {
                return tooLarge(data.length);
            }
            String problem = utf8Problem(data);
            if (problem != null) {
                return FrontEvent.refused("bad_utf8", "message is not UTF-8: " + problem);
            }
            text = StandardCharsets.UTF_8.decode(ByteBuffer.wrap(data)).toString();
        } else {
            long size = utf8Length(payload);
            if (size > maxMessageBytes) {
                return tooLarge(size);
            }
        }
        Object obj;
        try {
            obj = PyJson.decode(text);
        } catch (PyJson.Failure f) {
            return FrontEvent.refused(f.reason, f.getMessage());
        }
        try {
            return validate(obj);
        } catch (PyJson.Failure f) {
            FrontEvent refused = FrontEvent.refused(f.reason, f.getMessage());
            if (obj instanceof Map) {
                Map<?, ?> map = (Map<?, ?>) obj;
                refused.userId = lenientUser(map.get("user_id"));
                refused.ts = lenientTs(map.get("ts"));
            }
            return refused;
        }
    }

    /**
     * {@link #check} of many payloads in one call, for the tests that compare it with {@code udfs.events}. The
     * payloads and the answer are packed as fields: {@code "<length in chars>:<text>"}, {@code "-1:"} for null.
     * Per payload the answer has 8 fields: reason and message (null for a valid event), then (null for a refused
     * one) event_id, user_id, item_id, type, Python's repr of the weight, ts.
     */
    public String checkPacked(String packed) {
        StringBuilder out = new StringBuilder();
        int at = 0;
        while (at < packed.length()) {
            int colon = packed.indexOf(':', at);
            int n = Integer.parseInt(packed.substring(at, colon));
            String payload = n < 0 ? null : packed.substring(colon + 1, colon + 1 + n);
            at = colon + 1 + Math.max(n, 0);
            FrontEvent e = check(payload);
            boolean valid = e.reason == null;
            for (String field : new String[] {e.reason, e.message, valid ? e.eventId : null, valid ? e.userId : null,
                valid ? e.itemId : null, valid ? TYPES[e.type] : null, valid ? PyRepr.floatRepr(e.weight) : null,
                valid ? Long.toString(e.ts) : null}) {
                out.append(field == null ? -1 : field.length()).append(':');
                if (field != null) {
                    out.append(field);
                }
            }
        }
        return out.toString();
    }

    private FrontEvent tooLarge(long size) {
        return FrontEvent.refused("too_large", "message of " + size + " bytes is larger than " + maxMessageBytes);
    }

    /** The UTF-8 length of a string, lone surrogates as 3 bytes (Python's "surrogatepass"). */
    static long utf8Length(String s) {
        long n = 0;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c < 0x80) {
                n += 1;
            } else if (c < 0x800) {
                n += 2;
            } else if (Character.isHighSurrogate(c) && i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                n += 4;
                i++;
            } else {
                n += 3;
            }
        }
        return n;
    }

    private static boolean continuation(int b) {
        return (b & 0xC0) == 0x80;
    }

    /** Why bytes are not UTF-8, in the words of CPython's decoder (its first error), or null when they are. */
    static String utf8Problem(byte[] data) {
        int n = data.length;
        int i = 0;
        while (i < n) {
            int ch = data[i] & 0xFF;
            if (ch < 0x80) {
                i++;
                continue;
            }
            int left = n - i;
            if (ch < 0xC2 || ch > 0xF4) {
                return decodeError(data, i, 1, "invalid start byte");
            }
            int len = ch < 0xE0 ? 2 : ch < 0xF0 ? 3 : 4;
            // the second byte's range excludes overlong forms, surrogates and code points past U+10FFFF
            int lo = ch == 0xE0 ? 0xA0 : ch == 0xF0 ? 0x90 : 0x80;
            int hi = ch == 0xED ? 0x9F : ch == 0xF4 ? 0x8F : 0xBF;
            int bad = 0;  // bytes of the invalid sequence; 0: valid, or the data end inside a valid prefix
            if (left >= 2) {
                int c2 = data[i + 1] & 0xFF;
                if (c2 < lo || c2 > hi) {
                    bad = 1;
                } else {
                    for (int k = 2; k < len && k < left; k++) {
                        if (!continuation(data[i + k] & 0xFF)) {
                            bad = k;
                            break;
                        }
                    }
                }
            }
            if (bad == 0 && left < len) {
                return decodeError(data, i, n - i, "unexpected end of data");
            }
            if (bad > 0) {
                return decodeError(data, i, bad, "invalid continuation byte");
            }
            i += len;
        }
        return null;
    }

    private static String decodeError(byte[] data, int start, int length, String what) {
        if (length == 1) {
            return String.format("'utf-8' codec can't decode byte 0x%02x in position %d: %s", data[start] & 0xFF,
                    start, what);
        }
        return String.format("'utf-8' codec can't decode bytes in position %d-%d: %s", start, start + length - 1, what);
    }

    /** {@code udfs.events.validate_event}. */
    FrontEvent validate(Object decoded) throws PyJson.Failure {
        if (!(decoded instanceof Map)) {
            throw new PyJson.Failure("not_an_object",
                    "event must be a JSON object, got " + PyRepr.typeName(decoded));
        }
        @SuppressWarnings("unchecked")
        Map<String, Object> obj = (Map<String, Object>) decoded;
        List<String> missing = null;
        for (String field : REQUIRED) {
            if (!obj.containsKey(field)) {
                if (missing == null) {
                    missing = new ArrayList<>();
                }
                missing.add(field);
            }
        }
        if (missing != null) {
            throw new PyJson.Failure("missing_field", "missing field(s) " + String.join(", ", missing));
        }
        if (obj.size() > REQUIRED.length) {
            List<String> extra = new ArrayList<>();
            for (String key : obj.keySet()) {
                if (!FIELDS.contains(key)) {
                    extra.add(key);
                }
            }
            if (!extra.isEmpty()) {
                extra.sort(EventCheck::compareCodePoints);
                StringBuilder names = new StringBuilder();
                for (int k = 0; k < Math.min(5, extra.size()); k++) {
                    if (k > 0) {
                        names.append(", ");
                    }
                    names.append(PyRepr.repr(extra.get(k), 40));
                }
                throw new PyJson.Failure("unknown_field", "unknown field(s) " + names);
            }
        }
        FrontEvent e = new FrontEvent();
        e.eventId = id(obj, "event_id");
        e.userId = id(obj, "user_id");
        e.itemId = id(obj, "item_id");
        String eventId = e.eventId;
        Object etype = obj.get("type");
        if (!(etype instanceof String)) {
            throw new PyJson.Failure("wrong_type",
                    "type must be a string, got " + PyRepr.typeName(etype) + " in event " + eventId);
        }
        int code = -1;
        for (int c = 0; c < TYPES.length; c++) {
            if (TYPES[c].equals(etype)) {
                code = c;
                break;
            }
        }
        if (code < 0) {
            throw new PyJson.Failure("unknown_type", "type " + PyRepr.repr(etype, 40)
                    + " is not one of " + String.join(", ", TYPES) + " in event " + eventId);
        }
        e.type = (byte) code;
        e.ts = ts(obj.get("ts"), eventId);
        Object value = obj.get("value");
        if (value != null && !(value instanceof Long || value instanceof BigInteger || value instanceof Double)) {
            throw new PyJson.Failure("wrong_type",
                    "value " + PyRepr.repr(value, 40) + " must be a number in event " + eventId);
        }
        double number = value == null ? Double.NaN : ((Number) value).doubleValue();  // exact rounding, inf if too big
        if (value != null && Double.isInfinite(number)) {
            throw new PyJson.Failure("bad_number", "value " + PyRepr.repr(value) + " is not finite in event " + eventId);
        }
        if (code == 0) {
            if (value == null) {
                throw new PyJson.Failure("missing_field", "rate event " + eventId + " needs a value (the rating)");
            }
            if (!inRange(value, number)) {
                throw new PyJson.Failure("rating_out_of_range", "rating " + PyRepr.repr(value) + " out of range "
                        + PyRepr.formatG(minRating) + ".." + PyRepr.formatG(maxRating) + " for event " + eventId);
            }
            e.weight = number;
        } else {
            e.weight = value == null ? weights[code] : number;
            if (!(e.weight > 0)) {
                throw new PyJson.Failure("bad_value", "value " + PyRepr.repr(value) + " of " + etype + " event "
                        + eventId + " must be positive");
            }
        }
        return e;
    }

    /** {@code min_rating <= value <= max_rating}, exactly as Python compares an int or a float with floats. */
    private boolean inRange(Object value, double number) {
        if (value instanceof Double || (value instanceof Long && Math.abs((Long) value) < (1L << 53))) {
            return minRating <= number && number <= maxRating;
        }
        BigDecimal exact = value instanceof Long ? BigDecimal.valueOf((Long) value) : new BigDecimal((BigInteger) value);
        return exact.compareTo(new BigDecimal(minRating)) >= 0 && exact.compareTo(new BigDecimal(maxRating)) <= 0;
    }

    private long ts(Object raw, String eventId) throws PyJson.Failure {
        BigInteger big = null;
        long ts;
        if (raw instanceof Long) {
            ts = (Long) raw;
        } else if (raw instanceof BigInteger) {
            big = (BigInteger) raw;
            ts = 0;
        } else if (raw instanceof Double && Double.isFinite((Double) raw) && (Double) raw == Math.rint((Double) raw)) {
            double d = (Double) raw;
            if (d >= -0x1p63 && d < 0x1p63) {
                ts = (long) d;
            } else {
                big = new BigDecimal(d).toBigIntegerExact();
                ts = 0;
            }
        } else {
            throw new PyJson.Failure("wrong_type",
                    "ts " + PyRepr.repr(raw, 40) + " must be an integer (epoch ms) in event " + eventId);
        }
        if (big != null || ts < minTs || ts > maxTs) {
            throw new PyJson.Failure("bad_timestamp", "ts " + (big != null ? big.toString() : Long.toString(ts))
                    + " outside " + minTs + ".." + maxTs + " in event " + eventId);
        }
        return ts;
    }

    /** {@code udfs.events._id}: a string id, or an integer as its decimal string. */
    private String id(Map<String, Object> obj, String field) throws PyJson.Failure {
        Object raw = obj.get(field);
        String id;
        if (raw instanceof String) {
            id = (String) raw;
        } else if (raw instanceof Long || raw instanceof BigInteger) {
            if (((Number) raw).doubleValue() < 0 || (raw instanceof BigInteger && ((BigInteger) raw).signum() < 0)) {
                throw new PyJson.Failure("bad_id", field + " " + raw + " must not be negative");
            }
            id = raw.toString();
        } else {
            throw new PyJson.Failure("wrong_type", field + " must be a string or integer, got "
                    + PyRepr.typeName(raw) + " " + PyRepr.repr(raw, 80));
        }
        if (id.isEmpty()) {
            throw new PyJson.Failure("bad_id", field + " must be non-empty");
        }
        int length = id.length() > maxIdLength ? id.codePointCount(0, id.length()) : id.length();
        if (length > maxIdLength) {
            throw new PyJson.Failure("id_too_long",
                    field + " has " + length + " characters, more than " + maxIdLength);
        }
        String problem = idProblem(id);
        if (problem != null) {
            throw new PyJson.Failure("bad_id", field + " " + PyRepr.repr(id, 80) + " " + problem);
        }
        if (pySpace(id.codePointAt(0)) || pySpace(id.codePointBefore(id.length()))) {
            throw new PyJson.Failure("bad_id",
                    field + " " + PyRepr.repr(id, 80) + " must not have surrounding white space");
        }
        return id;
    }

    /** {@code udfs.events.id_problem}. */
    public static String idProblem(String value) {
        int index = 0;
        for (int i = 0; i < value.length(); index++) {
            int cp = value.codePointAt(i);
            i += Character.charCount(cp);
            if (cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029
                    || (cp >= 0xD800 && cp <= 0xDFFF)) {
                String what = cp == 0x2028 ? "the line separator" : cp == 0x2029 ? "the paragraph separator"
                        : cp >= 0xD800 ? "a lone surrogate" : "the control character";
                return String.format("has %s U+%04X at index %d", what, cp, index);
            }
        }
        if (value.equals(".") || value.equals("..")) {
            return "is a URL dot segment ('.' or '..'), which a URL path cannot carry";
        }
        return null;
    }

    /** Python's {@code str.isspace} of one code point (what {@code str.strip()} removes). */
    static boolean pySpace(int cp) {
        return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680
                || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f
                || cp == 0x3000;
    }

    /** Python's order of strings: by code point. */
    static int compareCodePoints(String a, String b) {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            int x = a.codePointAt(i);
            int y = b.codePointAt(j);
            if (x != y) {
                return Integer.compare(x, y);
            }
            i += Character.charCount(x);
            j += Character.charCount(y);
        }
        return Integer.compare(a.length() - i, b.length() - j);
    }

    /** The user id of a refused record, read leniently for its shard: a string, or a non-negative integer. */
    static String lenientUser(Object raw) {
        if (raw instanceof String) {
            return (String) raw;
        }
        if ((raw instanceof Long && (Long) raw >= 0) || (raw instanceof BigInteger && ((BigInteger) raw).signum() >= 0)) {
            return raw.toString();
        }
        return null;
    }

    /** The event time of a refused record, read leniently: an integral ts within the bounds, else MIN_VALUE. */
    long lenientTs(Object raw) {
        if (raw instanceof Long) {
            long ts = (Long) raw;
            return ts >= minTs && ts <= maxTs ? ts : Long.MIN_VALUE;
        }
        if (raw instanceof Double) {
            double d = (Double) raw;
            if (Double.isFinite(d) && d == Math.rint(d) && d >= minTs && d <= maxTs) {
                return (long) d;
            }
        }
        return Long.MIN_VALUE;
    }

    /** Every code point's {@link PyRepr#printable}, one per char of the result ('1' or '0'), for the tests. */
    public static String printableTable() {
        StringBuilder out = new StringBuilder(Character.MAX_CODE_POINT + 1);
        for (int cp = 0; cp <= Character.MAX_CODE_POINT; cp++) {
            out.append(PyRepr.printable(cp) ? '1' : '0');
        }
        return out.toString();
    }
}

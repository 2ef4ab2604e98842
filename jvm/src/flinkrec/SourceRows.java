package flinkrec;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Base64;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.types.Row;

/**
 * Input records as the job reads them: {@code Row(payload, origin)}, lossless for any value bytes.
 *
 * <p>{@code payload} is the value decoded as UTF-8 when it is valid UTF-8 and does not start with U+0000, U+FEFF or
 * U+FFFE (the hand-over of strings to Python takes those two for a UTF-16 byte order mark: it drops the first and
 * swaps the bytes of the rest after the second); otherwise U+0000 followed by the
 * Base64 of the value bytes (so the marker is unambiguous and invalid UTF-8 reaches the dead-letter topic byte for
 * byte); {@code null} for a null value (a tombstone).
 * {@code origin} is {@code "topic partition offset"}, followed by {@code " " + Base64(key)} when the record
 * has a key ({@code udfs.dlq.Origin} reads it), and empty for records that did not come from Kafka.
 * {@link SourceRecords} makes them from Kafka records, {@link #fromStrings} from plain strings (tests).
 */
public final class SourceRows {

    private SourceRows() {}

    /** The marker of a Base64-encoded payload. */
    public static final char BINARY = '\u0000';

    /** Whether a text reaches Python as it is: it does not start with the marker or a UTF-16 byte order mark. */
    static boolean plain(String text) {
        if (text.isEmpty()) {
            return true;
        }
        char first = text.charAt(0);
        return first != BINARY && first != '\uFEFF' && first != '\uFFFE';
    }

    public static final TypeInformation<Row> TYPE = Types.ROW(Types.STRING, Types.STRING);

    /** The payload string of a record value (see the class comment). */
    public static String payload(byte[] value) {
        if (value == null) {
            return null;
        }
        try {
            String text = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(value)).toString();
            if (plain(text)) {
                return text;
            }
        } catch (CharacterCodingException e) {
            // not UTF-8: carried as Base64 below
        }
        return BINARY + Base64.getEncoder().encodeToString(value);
    }

    /** The payload of a string (its UTF-8 bytes, as {@link #payload(byte[])}). */
    public static String payload(String value) {
        if (value == null || plain(value)) {
            return value;
        }
        return payload(value.getBytes(StandardCharsets.UTF_8));
    }

    /**
     * Plain strings as source rows with an empty origin (their payload as {@link #payload(String)}). Runs at the
     * strings' parallelism, chained to them, so the order of each input subtask is kept.
     */
    public static DataStream<Row> fromStrings(DataStream<String> strings) {
        return strings.map(new FromString()).returns(TYPE).name("source-rows").setParallelism(strings.getParallelism());
    }

    /** A plain string -> {@code Row(payload, "")}. */
    public static final class FromString implements MapFunction<String, Row> {
        private static final long serialVersionUID = 1L;

        @Override
        public Row map(String value) {
            return Row.of(payload(value), "");
        }
    }
}

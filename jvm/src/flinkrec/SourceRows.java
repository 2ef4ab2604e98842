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
 * <p>{@code payload} is the value decoded as UTF-8 when it is valid UTF-8 and does not start with U+0000;
 * otherwise U+0000 followed by the Base64 of the value bytes (so the marker is unambiguous and invalid UTF-8
 * reaches the dead-letter topic byte for byte); {@code null} for a null value (a tombstone).
 * {@code origin} is {@code "topic partition offset"}, followed by {@code " " + Base64(key)} when the record
 * has a key ({@code udfs.dlq.Origin} reads it), and empty for records that did not come from Kafka.
 * {@link SourceRecords} makes them from Kafka records, {@link #fromStrings} from plain strings (tests).
 */
public final class SourceRows {

    private SourceRows() {}

    /** The marker of a Base64-encoded payload. */
    public static final char BINARY = '\u0000';

    public static final TypeInformation<Row> TYPE = Types.ROW(Types.STRING, Types.STRING);

    /** The payload string of a record value (see the class comment). */
    public static String payload(byte[] value) {
        if (value == null) {
            return null;
        }
        if (value.length == 0 || value[0] != 0) {
            try {
                return StandardCharsets.UTF_8.newDecoder()
                        .onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT)
                        .decode(ByteBuffer.wrap(value)).toString();
            } catch (CharacterCodingException e) {
                // not UTF-8: carried as Base64 below
            }
        }
        return BINARY + Base64.getEncoder().encodeToString(value);
    }

    /**
     * Plain strings as source rows with an empty origin; a string starting with U+0000 is taken as encoded. Runs
     * at the strings' parallelism, chained to them, so the order of each input subtask is kept.
     */
    public static DataStream<Row> fromStrings(DataStream<String> strings) {
        return strings.map(new FromString()).returns(TYPE).name("source-rows").setParallelism(strings.getParallelism());
    }

    /** A plain string -> {@code Row(payload, "")}. */
    public static final class FromString implements MapFunction<String, Row> {
        private static final long serialVersionUID = 1L;

        @Override
        public Row map(String value) {
            return Row.of(value, "");
        }
    }
}

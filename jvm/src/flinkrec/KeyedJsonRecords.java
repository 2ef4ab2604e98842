package flinkrec;

import java.nio.charset.StandardCharsets;
import java.util.Base64;

import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.flink.metrics.Counter;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The job's JSON output messages as Kafka records, keyed by a field of the message and bounded in size.
 *
 * <p>The key is the string at the JSON pointer {@code keyPointer} (e.g. {@code /user_id}), as UTF-8, or, with
 * {@code keyIsBase64}, the bytes whose Base64 it holds (the dead-letter records carry their source key that
 * way); a message without it is written without a key. A record whose key and value together exceed
 * {@code maxRecordBytes} is not written: it is counted ({@code kafka_sink.oversized}) and logged with its key,
 * because a producer would fail the whole job with {@code RecordTooLargeException} and the restart would meet
 * the same record again. The record timestamp is left to the producer (the wall clock).
 */
public final class KeyedJsonRecords implements KafkaRecordSerializationSchema<String> {

    private static final long serialVersionUID = 1L;
    private static final Logger LOG = LoggerFactory.getLogger(KeyedJsonRecords.class);

    private final String topic;
    private final String keyPointer;
    private final boolean keyIsBase64;
    private final int maxRecordBytes;
    private transient ObjectMapper mapper;
    private transient Counter oversized;

    public KeyedJsonRecords(String topic, String keyPointer, boolean keyIsBase64, int maxRecordBytes) {
        if (maxRecordBytes < 1) {
            throw new IllegalArgumentException("maxRecordBytes " + maxRecordBytes + " must be at least 1");
        }
        this.topic = topic;
        this.keyPointer = keyPointer;
        this.keyIsBase64 = keyIsBase64;
        this.maxRecordBytes = maxRecordBytes;
    }

    @Override
    public void open(SerializationSchema.InitializationContext context, KafkaSinkContext sinkContext) {
        mapper = new ObjectMapper();
        oversized = context.getMetricGroup().addGroup("kafka_sink").counter("oversized");
    }

    @Override
    public ProducerRecord<byte[], byte[]> serialize(String message, KafkaSinkContext context, Long timestamp) {
        if (mapper == null) {
            mapper = new ObjectMapper();
        }
        byte[] value = message.getBytes(StandardCharsets.UTF_8);
        byte[] key = key(message);
        int size = value.length + (key == null ? 0 : key.length);
        if (size > maxRecordBytes) {
            if (oversized != null) {
                oversized.inc();
            }
            LOG.warn("not written to {}: a record of {} bytes (more than {}) with key {}", topic, size,
                    maxRecordBytes, key == null ? "(none)" : abbreviate(new String(key, StandardCharsets.UTF_8)));
            return null;  // KafkaWriter skips a null record
        }
        return new ProducerRecord<>(topic, null, null, key, value);
    }

    private byte[] key(String message) {
        try {
            JsonNode node = mapper.readTree(message).at(keyPointer);
            if (node == null || !node.isTextual()) {
                return null;
            }
            return keyIsBase64 ? Base64.getDecoder().decode(node.textValue())
                    : node.textValue().getBytes(StandardCharsets.UTF_8);
        } catch (Exception e) {
            return null;  // not JSON or not Base64: written without a key
        }
    }

    private static String abbreviate(String s) {
        return s.length() <= 200 ? s : s.substring(0, 200) + "...";
    }
}

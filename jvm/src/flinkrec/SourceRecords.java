package flinkrec;

import java.util.Base64;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/** Kafka records -> {@link SourceRows} rows (payload, origin), for the job's Kafka sources. */
public final class SourceRecords implements KafkaRecordDeserializationSchema<Row> {

    private static final long serialVersionUID = 1L;

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Row> out) {
        StringBuilder origin = new StringBuilder(record.topic()).append(' ').append(record.partition())
                .append(' ').append(record.offset());
        if (record.key() != null) {
            origin.append(' ').append(Base64.getEncoder().encodeToString(record.key()));
        }
        out.collect(Row.of(SourceRows.payload(record.value()), origin.toString()));
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return SourceRows.TYPE;
    }
}

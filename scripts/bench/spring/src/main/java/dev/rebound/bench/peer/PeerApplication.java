// PeerApplication.java - the Spring for Apache Kafka peer that scripts/bench.sh's "peer" phase
// measures beside rebound-consumer: @RetryableTopic with two retry topics on a fixed back-off and
// a dead-letter topic, in front of an in-memory sink (throughput) or an HTTP sink (retry timing).
//
// Usage: java -jar spring-peer.jar --spring.kafka.bootstrap-servers=HOST:PORT --peer.topic=T
//        --peer.group=G --peer.delay-ms=MS --peer.failure-rate=P --peer.seed=N
//        --peer.sink=memory|http://... --peer.metrics-port=PORT
//
// It reads the same records rebound does, treating the value as opaque bytes and the key as the
// note id. Progress and readiness are served on 127.0.0.1:PORT (/metrics, /readyz) in the
// Prometheus text format, so the benchmark watches it as it watches rebound-consumer.
package dev.rebound.bench.peer;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.SplittableRandom;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;
import java.util.zip.CRC32;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.context.event.EventListener;
import org.springframework.kafka.annotation.BackOff;
import org.springframework.kafka.annotation.DltHandler;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.annotation.RetryableTopic;
import org.springframework.kafka.config.KafkaListenerEndpointRegistry;
import org.springframework.kafka.retrytopic.SameIntervalTopicReuseStrategy;
import org.springframework.stereotype.Component;

@SpringBootApplication
public class PeerApplication {
    public static void main(String[] args) {
        SpringApplication.run(PeerApplication.class, args);
    }

    /** A transient sink failure. No stack trace: building one per failure would charge the peer
     * for something a tuned application avoids. */
    static final class TransientSinkFailure extends RuntimeException {
        TransientSinkFailure(String message) {
            super(message, null, false, false);
        }
    }

    @Component
    static class NoteListener {
        private final LongAdder applied = new LongAdder();
        private final LongAdder retried = new LongAdder();
        private final LongAdder deadLettered = new LongAdder();
        private final double failureRate;
        private final SplittableRandom random;
        private final HttpClient httpClient;
        private final URI httpSink;
        private final KafkaListenerEndpointRegistry registry;
        private volatile boolean started;

        NoteListener(
                @Value("${peer.failure-rate:0}") double failureRate,
                @Value("${peer.seed:1}") long seed,
                @Value("${peer.sink:memory}") String sink,
                @Value("${peer.metrics-port}") int metricsPort,
                KafkaListenerEndpointRegistry registry) throws IOException {
            if (failureRate < 0 || failureRate > 1) {
                throw new IllegalArgumentException("peer.failure-rate must be between 0 and 1, not " + failureRate);
            }
            this.failureRate = failureRate;
            this.random = new SplittableRandom(seed);
            this.registry = registry;
            if (sink.equals("memory")) {
                this.httpSink = null;
                this.httpClient = null;
            } else if (sink.startsWith("http://")) {
                this.httpSink = URI.create(sink);
                this.httpClient = HttpClient.newBuilder()
                        .version(HttpClient.Version.HTTP_1_1)
                        .connectTimeout(Duration.ofSeconds(5))
                        .build();
            } else {
                throw new IllegalArgumentException("peer.sink must be memory or an http:// URL, not " + sink);
            }
            HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", metricsPort), 16);
            server.createContext("/metrics", exchange -> {
                String body = "spring_peer_records_total{outcome=\"applied\"} " + applied.sum() + "\n"
                        + "spring_peer_records_total{outcome=\"retried\"} " + retried.sum() + "\n"
                        + "spring_peer_records_total{outcome=\"dead_lettered\"} " + deadLettered.sum() + "\n";
                respond(exchange, 200, body);
            });
            server.createContext("/readyz", exchange -> {
                boolean ready = started && assigned();
                respond(exchange, ready ? 200 : 503, ready ? "ready\n" : "starting\n");
            });
            server.start();
        }

        private static void respond(com.sun.net.httpserver.HttpExchange exchange, int status, String body)
                throws IOException {
            byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
            exchange.sendResponseHeaders(status, bytes.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(bytes);
            }
        }

        /** Every listener container (the topic, both retry topics, the DLT) has its partitions. */
        private boolean assigned() {
            return registry.getAllListenerContainers().stream().allMatch(container ->
                    container.isRunning()
                            && container.getAssignedPartitions() != null
                            && !container.getAssignedPartitions().isEmpty());
        }

        @EventListener(ApplicationReadyEvent.class)
        void onReady() {
            started = true;
        }

        // Three attempts: the first on the topic, one on each retry topic (fixed back-off, one
        // topic per attempt as rebound has one per tier), then the dead-letter topic.
        @RetryableTopic(
                attempts = "3",
                backOff = @BackOff(delayString = "${peer.delay-ms}"),
                sameIntervalTopicReuseStrategy = SameIntervalTopicReuseStrategy.MULTIPLE_TOPICS,
                numPartitions = "${peer.partitions:6}",
                replicationFactor = "1")
        @KafkaListener(topics = "${peer.topic}", groupId = "${peer.group}")
        void listen(ConsumerRecord<String, byte[]> record) {
            boolean fails;
            synchronized (random) {
                fails = failureRate > 0 && random.nextDouble() < failureRate;
            }
            if (fails) {
                failed(record);
            }
            if (httpSink != null) {
                post(record);
            }
            applied.increment();
        }

        private void failed(ConsumerRecord<String, byte[]> record) {
            // Counted as rebound counts "retried": a failure that goes on to a retry topic.
            if (!record.topic().endsWith("-retry-1")) {
                retried.increment();
            }
            throw new TransientSinkFailure("injected transient failure of note " + record.key());
        }

        private void post(ConsumerRecord<String, byte[]> record) {
            CRC32 crc = new CRC32();
            crc.update(record.value());
            // One key per note version, as rebound's webhook sink sends.
            String idempotencyKey = record.key() + ":" + Long.toHexString(crc.getValue());
            HttpRequest request = HttpRequest.newBuilder(httpSink)
                    .timeout(Duration.ofSeconds(10))
                    .header("Content-Type", "application/octet-stream")
                    .header("Idempotency-Key", idempotencyKey)
                    .POST(HttpRequest.BodyPublishers.ofByteArray(record.value()))
                    .build();
            int status;
            try {
                status = httpClient.send(request, HttpResponse.BodyHandlers.discarding()).statusCode();
            } catch (IOException error) {
                throw new TransientSinkFailure("webhook unreachable: " + error.getMessage());
            } catch (InterruptedException error) {
                Thread.currentThread().interrupt();
                throw new TransientSinkFailure("interrupted");
            }
            if (status < 200 || status > 299) {
                if (!record.topic().endsWith("-retry-1")) {
                    retried.increment();
                }
                throw new TransientSinkFailure("webhook answered " + status);
            }
        }

        @DltHandler
        void deadLetter(ConsumerRecord<String, byte[]> record) {
            deadLettered.increment();
        }
    }
}

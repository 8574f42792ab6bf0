// An agency system calling its govnode node with grpc-java: one Verify (联机验证, 第十四条) and
// one Query (检索查询, 第二十六条) over mutual TLS, with the bundle `govnode agency add` wrote.
//
//   ./build.sh && ./run.sh BUNDLE_DIR HOST:PORT RESOURCE_CODE KEY_ITEM=VALUE [ITEM=CLAIMED ...]
//
// Built against Debian's grpc-java (1.41, Netty transport, OpenSSL through netty-tcnative)
// and protobuf-java; the messages and the stub are generated from proto/ by protoc and its
// grpc-java plugin (build.sh). scripts/install_examples.sh installs them.

import govnode.v1.Sharing.ItemMatch;
import govnode.v1.Sharing.QueryRequest;
import govnode.v1.Sharing.QueryResponse;
import govnode.v1.Sharing.QueryRow;
import govnode.v1.Sharing.VerifyRequest;
import govnode.v1.Sharing.VerifyResponse;
import govnode.v1.SharingServiceGrpc;
import govnode.v1.SharingServiceGrpc.SharingServiceBlockingStub;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.GrpcSslContexts;
import io.grpc.netty.NettyChannelBuilder;
import io.netty.handler.ssl.SslContextBuilder;
import io.netty.handler.ssl.SslProvider;
import java.io.File;
import java.util.Arrays;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

public final class VerifyQuery {
  private static final Metadata.Key<String> REQUEST_ID =
      Metadata.Key.of("govnode-request-id", Metadata.ASCII_STRING_MARSHALLER);

  public static void main(String[] args) throws Exception {
    if (args.length < 4) {
      System.err.println("usage: run.sh BUNDLE HOST:PORT RESOURCE KEY=VALUE [ITEM=VALUE ...]");
      System.exit(2);
    }
    File bundle = new File(args[0]);
    ManagedChannel channel =
        NettyChannelBuilder.forTarget(args[1])
            .sslContext(
                // OpenSSL (netty-tcnative) for TLS: gRPC needs ALPN to agree on HTTP/2, and
                // Debian's Netty 4.1.48 is built without ALPN for the JDK's own TLS ("JDK
                // provider does not support ALPN protocol"). With Maven Central's grpc-java,
                // GrpcSslContexts.forClient() does.
                GrpcSslContexts.configure(SslContextBuilder.forClient(), SslProvider.OPENSSL)
                    .trustManager(new File(bundle, "ca.crt")) // the province root
                    .keyManager(new File(bundle, "client.crt"), new File(bundle, "client.key"))
                    .build())
            .keepAliveTime(60, TimeUnit.SECONDS) // the node refuses pings more often than 10 s
            .build();
    String resource = args[2];
    Map<String, String> key = pairs(args, 3, 4);
    try {
      VerifyResponse verified =
          stub(channel)
              .verify(
                  VerifyRequest.newBuilder()
                      .setResourceCode(resource)
                      .putAllKey(key)
                      .putAllClaimed(pairs(args, 4, args.length))
                      .build());
      System.out.printf(
          "verify found=%s all_match=%s%n", verified.getFound(), verified.getAllMatch());
      for (ItemMatch m : verified.getMatchesList()) {
        System.out.printf("verify %s %s%n", m.getItem(), m.getResult());
      }
      QueryResponse page =
          stub(channel)
              .query(QueryRequest.newBuilder().setResourceCode(resource).putAllKey(key).build());
      for (QueryRow row : page.getRowsList()) {
        StringBuilder line = new StringBuilder("query");
        new TreeMap<>(row.getRecord().getValuesMap())
            .forEach((item, value) -> line.append(' ').append(item).append('=').append(value));
        System.out.println(line);
      }
      System.out.printf("query rows=%d%n", page.getRowsCount());
    } catch (StatusRuntimeException e) {
      // A refusal: the status, the node's message, and the request id to quote to the operator.
      Metadata trailers = e.getTrailers();
      System.err.printf(
          "refused %s: %s (request id %s)%n",
          e.getStatus().getCode(),
          e.getStatus().getDescription(),
          trailers == null ? null : trailers.get(REQUEST_ID));
      System.exit(1);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /** A stub whose calls must finish within 10 s: every call has a deadline. */
  private static SharingServiceBlockingStub stub(ManagedChannel channel) {
    return SharingServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS);
  }

  private static Map<String, String> pairs(String[] args, int from, int to) {
    Map<String, String> values = new TreeMap<>();
    for (String arg : Arrays.copyOfRange(args, from, to)) {
      String[] kv = arg.split("=", 2);
      values.put(kv[0], kv.length > 1 ? kv[1] : "");
    }
    return values;
  }
}

package io.sparrowllm.bridge;

import javax.net.ServerSocketFactory;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;

/**
 * Gateway sockets with TCP_NODELAY. A bulk answer spans several TCP segments; with Nagle's algorithm
 * its last partial segment waits for the client's delayed ACK, which cost ~20 ms per 100 KB list.
 */
final class NoDelayServerSocketFactory extends ServerSocketFactory {
    @Override
    public ServerSocket createServerSocket() throws IOException {
        return new NoDelayServerSocket();
    }

    @Override
    public ServerSocket createServerSocket(int port) throws IOException {
        return bound(new NoDelayServerSocket(), port, 50, null);
    }

    @Override
    public ServerSocket createServerSocket(int port, int backlog) throws IOException {
        return bound(new NoDelayServerSocket(), port, backlog, null);
    }

    @Override
    public ServerSocket createServerSocket(int port, int backlog, InetAddress address) throws IOException {
        return bound(new NoDelayServerSocket(), port, backlog, address);
    }

    private static ServerSocket bound(ServerSocket socket, int port, int backlog, InetAddress address) throws IOException {
        socket.bind(new InetSocketAddress(address, port), backlog);
        return socket;
    }

    private static final class NoDelayServerSocket extends ServerSocket {
        NoDelayServerSocket() throws IOException {
            super();
        }

        @Override
        public Socket accept() throws IOException {
            Socket socket = new Socket();
            implAccept(socket);
            socket.setTcpNoDelay(true);
            return socket;
        }
    }
}

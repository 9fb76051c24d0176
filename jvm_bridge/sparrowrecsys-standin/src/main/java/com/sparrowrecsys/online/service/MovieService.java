package com.sparrowrecsys.online.service;

import com.sparrowrecsys.online.datamanager.DataManager;

import javax.servlet.http.HttpServlet;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import java.io.IOException;

/** TEST STAND-IN of the host's /getmovie: one movie by {@code id}, an empty body when unknown. */
public class MovieService extends HttpServlet {
    @Override
    protected void doGet(HttpServletRequest request, HttpServletResponse response) throws IOException {
        HostJson.answer(response, () -> DataManager.getInstance().getMovieById(Integer.parseInt(request.getParameter("id"))));
    }
}

# Remake with: gnuplot 2026-12-03-epyc-family-26-model-2-2c.gp (in this directory)
set terminal pngcairo size 3000,3840 font 'DejaVu Sans,15'
set encoding utf8
set output '2026-12-03-epyc-family-26-model-2-2c.png'
set datafile missing '?'
set style data histograms
set style histogram clustered gap 1
set style fill solid 1.0 border rgb '#333333'
set boxwidth 0.9 relative
set key outside right top vertical Left reverse noenhanced samplen 2
set xtics rotate by 50 right nomirror scale 0 noenhanced font ',13'
set ytics nomirror
set grid ytics lc rgb '#dddddd'
set ylabel '% of floor'
set yrange [0:140]
set lmargin 10
set rmargin 28
set multiplot layout 6,1 title "bnforge CPU benchmark: % of floor (copy bandwidth), DRAM regime (inputs rotated past 3× the LLC) — 2026-12-03-epyc-family-26-model-2-2c, AMD EPYC (family 26, model 2)" font ',18' noenhanced
unset arrow
set arrow from graph 0, first 100 to graph 1, first 100 nohead lw 2 lc rgb '#000000' front
set arrow from graph 0, first 85 to graph 1, first 85 nohead lw 1.5 dt 2 lc rgb '#2e7d32' front
set arrow from first 9.5, graph 0 to first 9.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set arrow from first 19.5, graph 0 to first 19.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set arrow from first 29.5, graph 0 to first 29.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set xrange [-0.6:39.6]
set title 'train_forward  (dashed: 85% target)' font ',16' noenhanced
plot '2026-12-03-epyc-family-26-model-2-2c.dat' index 0 using 2:xtic(1) title 'bnforge' lc rgb '#1f4e9c', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 0 using 3 title 'oneDNN' lc rgb '#e69f00', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 0 using 4 title 'oneDNN OpenMP' lc rgb '#b8860b', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 0 using 5 title 'PyTorch' lc rgb '#c0392b', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 0 using 6 title 'Adams2019' lc rgb '#2ca02c', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 0 using 7 title 'Mullapudi2016' lc rgb '#8e44ad', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 0 using 8 title 'Li2018' lc rgb '#8c564b'
unset arrow
set arrow from graph 0, first 100 to graph 1, first 100 nohead lw 2 lc rgb '#000000' front
set arrow from graph 0, first 92 to graph 1, first 92 nohead lw 1.5 dt 2 lc rgb '#2e7d32' front
set arrow from first 9.5, graph 0 to first 9.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set arrow from first 19.5, graph 0 to first 19.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set arrow from first 29.5, graph 0 to first 29.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set xrange [-0.6:39.6]
set title 'eval_forward  (dashed: 92% target)' font ',16' noenhanced
plot '2026-12-03-epyc-family-26-model-2-2c.dat' index 1 using 2:xtic(1) title 'bnforge' lc rgb '#1f4e9c', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 1 using 3 title 'oneDNN' lc rgb '#e69f00', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 1 using 4 title 'oneDNN OpenMP' lc rgb '#b8860b', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 1 using 5 title 'PyTorch' lc rgb '#c0392b', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 1 using 6 title 'Adams2019' lc rgb '#2ca02c', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 1 using 7 title 'Mullapudi2016' lc rgb '#8e44ad', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 1 using 8 title 'Li2018' lc rgb '#8c564b'
unset arrow
set arrow from graph 0, first 100 to graph 1, first 100 nohead lw 2 lc rgb '#000000' front
set arrow from graph 0, first 85 to graph 1, first 85 nohead lw 1.5 dt 2 lc rgb '#2e7d32' front
set arrow from first 9.5, graph 0 to first 9.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set arrow from first 19.5, graph 0 to first 19.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set arrow from first 29.5, graph 0 to first 29.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set xrange [-0.6:39.6]
set title 'backward  (dashed: 85% target)' font ',16' noenhanced
plot '2026-12-03-epyc-family-26-model-2-2c.dat' index 2 using 2:xtic(1) title 'bnforge' lc rgb '#1f4e9c', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 2 using 3 title 'oneDNN' lc rgb '#e69f00', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 2 using 4 title 'oneDNN OpenMP' lc rgb '#b8860b', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 2 using 5 title 'PyTorch' lc rgb '#c0392b', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 2 using 6 title 'Adams2019' lc rgb '#2ca02c', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 2 using 7 title 'Mullapudi2016' lc rgb '#8e44ad', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 2 using 8 title 'Li2018' lc rgb '#8c564b'
unset arrow
set arrow from graph 0, first 100 to graph 1, first 100 nohead lw 2 lc rgb '#000000' front
set arrow from graph 0, first 85 to graph 1, first 85 nohead lw 1.5 dt 2 lc rgb '#2e7d32' front
set arrow from first 9.5, graph 0 to first 9.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set arrow from first 19.5, graph 0 to first 19.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set arrow from first 29.5, graph 0 to first 29.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set xrange [-0.6:39.6]
set title 'relu_forward  (dashed: 85% target)' font ',16' noenhanced
plot '2026-12-03-epyc-family-26-model-2-2c.dat' index 3 using 2:xtic(1) title 'bnforge' lc rgb '#1f4e9c', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 3 using 3 title 'oneDNN' lc rgb '#e69f00', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 3 using 4 title 'oneDNN OpenMP' lc rgb '#b8860b', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 3 using 5 title 'PyTorch' lc rgb '#c0392b', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 3 using 6 title 'Adams2019' lc rgb '#2ca02c', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 3 using 7 title 'Mullapudi2016' lc rgb '#8e44ad', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 3 using 8 title 'Li2018' lc rgb '#8c564b'
unset arrow
set arrow from graph 0, first 100 to graph 1, first 100 nohead lw 2 lc rgb '#000000' front
set arrow from graph 0, first 85 to graph 1, first 85 nohead lw 1.5 dt 2 lc rgb '#2e7d32' front
set arrow from first 9.5, graph 0 to first 9.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set arrow from first 19.5, graph 0 to first 19.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set arrow from first 29.5, graph 0 to first 29.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set xrange [-0.6:39.6]
set title 'fused_forward  (dashed: 85% target)' font ',16' noenhanced
plot '2026-12-03-epyc-family-26-model-2-2c.dat' index 4 using 2:xtic(1) title 'bnforge' lc rgb '#1f4e9c', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 4 using 3 title 'oneDNN' lc rgb '#e69f00', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 4 using 4 title 'oneDNN OpenMP' lc rgb '#b8860b', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 4 using 5 title 'PyTorch' lc rgb '#c0392b', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 4 using 6 title 'Adams2019' lc rgb '#2ca02c', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 4 using 7 title 'Mullapudi2016' lc rgb '#8e44ad', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 4 using 8 title 'Li2018' lc rgb '#8c564b'
unset arrow
set arrow from graph 0, first 100 to graph 1, first 100 nohead lw 2 lc rgb '#000000' front
set arrow from graph 0, first 85 to graph 1, first 85 nohead lw 1.5 dt 2 lc rgb '#2e7d32' front
set arrow from first 9.5, graph 0 to first 9.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set arrow from first 19.5, graph 0 to first 19.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set arrow from first 29.5, graph 0 to first 29.5, graph 1 nohead lw 1 dt 3 lc rgb '#888888'
set xrange [-0.6:39.6]
set title 'fused_backward  (dashed: 85% target)' font ',16' noenhanced
plot '2026-12-03-epyc-family-26-model-2-2c.dat' index 5 using 2:xtic(1) title 'bnforge' lc rgb '#1f4e9c', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 5 using 3 title 'oneDNN' lc rgb '#e69f00', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 5 using 4 title 'oneDNN OpenMP' lc rgb '#b8860b', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 5 using 5 title 'PyTorch' lc rgb '#c0392b', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 5 using 6 title 'Adams2019' lc rgb '#2ca02c', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 5 using 7 title 'Mullapudi2016' lc rgb '#8e44ad', \
     '2026-12-03-epyc-family-26-model-2-2c.dat' index 5 using 8 title 'Li2018' lc rgb '#8c564b'
unset multiplot
